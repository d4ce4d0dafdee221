/* The widget's panel (/embed, inside the iframe that /widget.js puts on the blog): what the chat
   page does not need. Escape and the close button ask the loader to close the panel; Tab stays
   inside the panel (focus trap); the loader's "opened" message puts the focus in the question
   box. Messages to the blog page carry no reader data, only "close". */
(function () {
  "use strict";

  var FOCUSABLE = "a[href], button:not([disabled]), textarea:not([disabled]), select:not([disabled]), " +
                  "input:not([disabled]), [tabindex]:not([tabindex='-1'])";
  var question = document.getElementById("question");

  function close() {
    if (window.parent !== window) window.parent.postMessage({ type: "arsonor-widget:close" }, "*");
  }

  function focusables() {
    return Array.prototype.filter.call(document.querySelectorAll(FOCUSABLE), function (el) {
      return el.getClientRects().length > 0;
    });
  }

  document.getElementById("widget-close").addEventListener("click", close);
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape") {
      e.preventDefault();
      close();
    } else if (e.key === "Tab") {
      var items = focusables();
      if (!items.length) return;
      var first = items[0];
      var last = items[items.length - 1];
      var inside = items.indexOf(document.activeElement) >= 0;
      if (e.shiftKey && (document.activeElement === first || !inside)) {
        e.preventDefault();
        last.focus();
      } else if (!e.shiftKey && (document.activeElement === last || !inside)) {
        e.preventDefault();
        first.focus();
      }
    }
  });
  window.addEventListener("message", function (e) {
    if (e.source !== window.parent || !e.data || e.data.type !== "arsonor-widget:opened") return;
    question.focus();
  });
})();
