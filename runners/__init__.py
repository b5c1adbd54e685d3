"""One job end to end: build from config, train, track (W&B and the local run store), launch."""
