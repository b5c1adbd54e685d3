(function () {
  "use strict";
  function columnsOf(thead) {
    var taken = [], map = new Map();
    Array.prototype.forEach.call(thead.rows, function (row, r) {
      taken[r] = taken[r] || [];
      var c = 0;
      Array.prototype.forEach.call(row.cells, function (th) {
        while (taken[r][c]) c++;
        var rs = th.rowSpan || 1, cs = th.colSpan || 1;
        for (var i = 0; i < rs; i++) {
          taken[r + i] = taken[r + i] || [];
          for (var j = 0; j < cs; j++) taken[r + i][c + j] = true;
        }
        if (cs === 1) map.set(th, c);
        c += cs;
      });
    });
    return map;
  }
  function cellAt(row, index) {
    var c = 0;
    for (var i = 0; i < row.cells.length; i++) {
      var span = row.cells[i].colSpan || 1;
      if (index < c + span) return row.cells[i];
      c += span;
    }
    return null;
  }
  function sortTable(table, th, index) {
    var body = table.tBodies[0];
    if (!body) return;
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = rows.some(function (r) { var c = cellAt(r, index); return c && c.hasAttribute("data-sort"); });
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var keyed = rows.map(function (r, i) {
      var c = cellAt(r, index), v = null;
      if (c) {
        if (numeric) {
          var raw = c.getAttribute("data-sort");
          v = raw === null || raw === "" ? null : parseFloat(raw);
          if (v !== null && isNaN(v)) v = null;
        } else {
          v = c.textContent.trim();
          if (v === "" || v === "\u2014") v = null;
        }
      }
      return {row: r, value: v, i: i};
    });
    keyed.sort(function (a, b) {
      if (a.value === null || b.value === null) {
        if (a.value === b.value) return a.i - b.i;
        return a.value === null ? 1 : -1;  // missing values last either way
      }
      var d = numeric ? a.value - b.value : a.value.localeCompare(b.value, undefined, {numeric: true});
      return (ascending ? d : -d) || a.i - b.i;
    });
    keyed.forEach(function (k) { body.appendChild(k.row); });
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    if (!table.tHead) return;
    var columns = columnsOf(table.tHead);
    columns.forEach(function (index, th) {
      th.tabIndex = 0;
      th.title = "sort by this column";
      th.addEventListener("click", function () { sortTable(table, th, index); });
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sortTable(table, th, index); }
      });
    });
  });
  var boxes = Array.prototype.slice.call(document.querySelectorAll("#filters input[data-filter]"));
  function applyFilter() {
    var off = {scheme: new Set(), cell: new Set()};
    boxes.forEach(function (b) { if (!b.checked) off[b.getAttribute("data-filter")].add(b.value); });
    var shown = 0, all = 0;
    document.querySelectorAll("tbody tr[data-scheme]").forEach(function (tr) {
      var cell = tr.getAttribute("data-cell");
      var hide = off.scheme.has(tr.getAttribute("data-scheme")) || (cell !== null && off.cell.has(cell));
      tr.hidden = hide;
      all++;
      if (!hide) shown++;
    });
    var count = document.getElementById("filter-count");
    if (count) count.textContent = shown + " of " + all + " table rows shown";
  }
  boxes.forEach(function (b) { b.addEventListener("change", applyFilter); });
  document.querySelectorAll("#filters button[data-select]").forEach(function (button) {
    button.addEventListener("click", function () {
      var on = button.getAttribute("data-select") === "all";
      boxes.forEach(function (b) { b.checked = on; });
      applyFilter();
    });
  });
  applyFilter();
})();
