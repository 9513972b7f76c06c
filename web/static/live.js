// Live refresh: pages marked with data-live reload their <main> every
// 10 s while no form on them is being edited. The dashboard works without it.
(function () {
  "use strict";
  var main = document.querySelector("main");
  if (!main || !document.querySelector("[data-live]")) { return; }
  var dirty = false;
  document.addEventListener("input", function () { dirty = true; });
  setInterval(function () {
    if (dirty || document.hidden) { return; }
    fetch(location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html || dirty) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.querySelector("main");
        if (fresh) { main.innerHTML = fresh.innerHTML; }
      })
      .catch(function () {});
  }, 10000);
})();
