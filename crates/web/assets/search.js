// Autocomplete for the search box: a progressive enhancement. Without this
// script the box is a plain form; with it, the browser's own suggestion list
// offers product titles and categories as the shopper types.
(function () {
  var input = document.getElementById("q");
  var list = document.getElementById("suggestions");
  if (!input || !list || !window.fetch) return;
  var timer = null;
  var asked = "";
  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () {
      var q = input.value.trim();
      if (q.length < 2 || q === asked) return;
      asked = q;
      fetch("/api/v1/search/suggest?q=" + encodeURIComponent(q), { headers: { accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : { data: [] }; })
        .then(function (body) {
          if (q !== asked) return;
          while (list.firstChild) list.removeChild(list.firstChild);
          (body.data || []).forEach(function (s) {
            var option = document.createElement("option");
            option.value = s.text;
            list.appendChild(option);
          });
        })
        .catch(function () {});
    }, 150);
  });
})();
