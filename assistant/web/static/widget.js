/* Arsonor Assistant widget loader. Paste on the blog (ASSISTANT is the assistant's address,
   e.g. https + the host name):
     <script src="ASSISTANT/widget.js" data-lang="fr" async></script>
   It adds an "Ask the blog" button (in a shadow root, so the blog's CSS cannot reach it) that
   opens the chat in an iframe of ASSISTANT_HOST/embed: the chat's code, styles and the
   readers' conversations stay on the assistant's origin, out of reach of the blog's scripts
   and styles. Interface language: data-lang, else the page's <html lang>, else French. */
(function () {
  "use strict";
  if (window.ArsonorWidget) return;  // the tag pasted twice

  var script = document.currentScript || document.querySelector("script[src*='/widget.js']");
  if (!script) return;
  var origin = new URL(script.src, window.location.href).origin;
  var LABELS = {
    fr: { open: "Demandez au blog", panel: "Assistant du blog Arsonor" },
    en: { open: "Ask the blog", panel: "Arsonor blog assistant" }
  };

  function language(value) {
    var code = String(value || "").trim().toLowerCase().slice(0, 2);
    return LABELS[code] ? code : null;
  }

  var lang = language(script.getAttribute("data-lang")) || language(document.documentElement.lang) || "fr";
  var labels = LABELS[lang];
  var phone = window.matchMedia("(max-width: 480px)");
  var host, button, panel, frame;

  // Inline !important styles: they win over any rule of the blog's stylesheets.
  function css(el, rules) {
    Object.keys(rules).forEach(function (name) { el.style.setProperty(name, rules[name], "important"); });
  }

  function layout() {
    if (!panel) return;
    var full = phone.matches;
    css(panel, full ? { inset: "0", width: "100%", height: "100%", "border-radius": "0" }
      : { inset: "auto 20px 88px auto", width: "min(400px, calc(100vw - 40px))",
          height: "min(640px, calc(100vh - 108px))", "border-radius": "14px" });
    css(button, { display: full && isOpen() ? "none" : "inline-flex" });
  }

  function isOpen() { return button.getAttribute("aria-expanded") === "true"; }

  // The iframe is created on the first hover, focus or click, not at page load: readers who
  // never open the chat do not load it.
  function ensureFrame() {
    if (frame) return;
    panel = document.createElement("div");
    panel.id = "arsonor-widget-panel";
    panel.setAttribute("role", "dialog");
    panel.setAttribute("aria-modal", "true");
    panel.setAttribute("aria-label", labels.panel);
    css(panel, { position: "fixed", display: "none", overflow: "hidden", background: "#f7f5f2",
                 "box-shadow": "0 12px 40px rgba(0,0,0,.25)", "z-index": "2147483647", margin: "0",
                 padding: "0", border: "0" });
    frame = document.createElement("iframe");
    frame.src = origin + "/embed?lang=" + lang;
    frame.title = labels.panel;
    css(frame, { width: "100%", height: "100%", border: "0", display: "block", margin: "0" });
    panel.appendChild(frame);
    host.shadowRoot.appendChild(panel);
    frame.addEventListener("load", function () { if (isOpen()) focusPanel(); });
    layout();
  }

  function focusPanel() {
    frame.focus();
    frame.contentWindow.postMessage({ type: "arsonor-widget:opened" }, origin);
  }

  function open() {
    if (!button) return;  // not mounted yet (the page is still loading)
    ensureFrame();
    button.setAttribute("aria-expanded", "true");
    css(panel, { display: "block" });
    layout();
    focusPanel();
  }

  function close() {
    if (!isOpen()) return;
    button.setAttribute("aria-expanded", "false");
    css(panel, { display: "none" });
    layout();
    button.focus();
  }

  function mount() {
    host = document.createElement("arsonor-widget");
    css(host, { all: "initial", position: "fixed", right: "0", bottom: "0", width: "0", height: "0",
                "z-index": "2147483647", display: "block" });
    host.attachShadow({ mode: "open" });
    button = document.createElement("button");
    button.type = "button";
    button.id = "arsonor-widget-button";
    button.textContent = labels.open;
    button.setAttribute("aria-haspopup", "dialog");
    button.setAttribute("aria-expanded", "false");
    css(button, { position: "fixed", right: "20px", bottom: "20px", display: "inline-flex",
                  "align-items": "center", padding: "12px 18px", border: "0", "border-radius": "999px",
                  background: "#c2410c", color: "#fff", cursor: "pointer", margin: "0",
                  font: "600 15px/1.2 system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif",
                  "box-shadow": "0 4px 14px rgba(0,0,0,.25)", "z-index": "2147483647",
                  "outline-offset": "3px" });
    button.addEventListener("click", function () { if (isOpen()) close(); else open(); });
    button.addEventListener("pointerenter", ensureFrame);
    button.addEventListener("focus", ensureFrame);
    host.shadowRoot.appendChild(button);
    document.body.appendChild(host);
    window.addEventListener("message", function (e) {
      if (!frame || e.source !== frame.contentWindow || e.origin !== origin) return;
      if (e.data && e.data.type === "arsonor-widget:close") close();
    });
    document.addEventListener("keydown", function (e) { if (e.key === "Escape") close(); });
    if (phone.addEventListener) phone.addEventListener("change", layout);
  }

  window.ArsonorWidget = { open: function () { open(); }, close: function () { close(); } };
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
