// Filter the stacks table by package name as you type. Data: each row's data-packages
// ("name==version ..."). Only textContent is ever written, so nothing from a spec can run.
(function () {
  "use strict";
  var box = document.getElementById("q");
  var table = document.getElementById("stacks");
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  var shown = document.getElementById("shown");
  var none = document.getElementById("none");
  function norm(s) { return s.toLowerCase().replace(/[-_.]+/g, "-"); }
  var data = rows.map(function (r) {
    return (r.getAttribute("data-packages") || "").split(" ").filter(Boolean).map(function (p) {
      var i = p.indexOf("==");
      return { name: p.slice(0, i), key: norm(p.slice(0, i)), version: p.slice(i + 2) };
    });
  });
  function update() {
    var words = box.value.trim().split(/[\s=<>]+/).filter(Boolean);
    var name = words.length ? norm(words[0]) : "";
    var version = words.length > 1 ? words[1] : "";
    var count = 0;
    rows.forEach(function (r, i) {
      var hits = name ? data[i].filter(function (p) {
        return p.key.indexOf(name) !== -1 && p.version.indexOf(version) === 0;
      }) : [];
      var visible = !name || hits.length > 0;
      r.hidden = !visible;
      if (visible) { count++; }
      r.querySelector(".match").textContent = hits.map(function (p) {
        return p.name + " " + p.version;
      }).join(", ");
    });
    table.classList.toggle("searching", !!name);
    shown.textContent = name ? count + " of " + rows.length + " stack versions" : "";
    none.hidden = !name || count > 0;
    table.tHead.hidden = !none.hidden;
    document.getElementById("none-q").textContent = box.value.trim();
  }
  box.addEventListener("input", update);
  var params = new URLSearchParams(window.location.search);
  if (params.get("q")) { box.value = params.get("q"); }
  update();
})();
