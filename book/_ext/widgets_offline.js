// Loaded just before RequireJS on pages that embed Jupyter widgets (see offline_site.py).
// 1. RequireJS reads a global `require` object as its configuration when it loads. A base URL next
//    to this file lets the widget manager find its fonts here rather than relative to the page.
// 2. The widget controls typeset their labels with the MathJax 2 call MathJax.Hub.Queue, which
//    MathJax 3 lacks; forward those calls to MathJax 3 once the page has loaded.
var require = { baseUrl: document.currentScript.src.replace(/[^/]*$/, "") };

window.addEventListener("load", function () {
  var mathjax = window.MathJax;
  if (!mathjax || mathjax.Hub || !mathjax.startup || !mathjax.startup.promise) {
    return;
  }
  mathjax.Hub = {
    Queue: function () {
      Array.prototype.forEach.call(arguments, function (call) {
        var element = call[2];
        if (element) {
          mathjax.startup.promise = mathjax.startup.promise.then(function () {
            return mathjax.typesetPromise([element]);
          });
        }
      });
    },
  };
});
