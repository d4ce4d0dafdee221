/* The chat page: asks POST /question with Accept: text/event-stream and reads the SSE stream
   (sources, token..., done | error) with fetch + ReadableStream; keeps conversation_id for
   follow-ups; thumbs up/down post /feedback for that answer's exchange_id. Sources are shown
   one entry per article with its cited passages [n] under it; a declined answer (covered:
   false) shows the related articles instead, and notices above the sources. Runs the chat page
   (/) and the widget's embed page (/embed) alike. All text goes in through textContent:
   nothing the server or the user sends is ever parsed as HTML. */
(function () {
  "use strict";

  var t = window.I18N.t;
  var thread = document.getElementById("thread");
  var intro = document.getElementById("intro");
  var form = document.getElementById("ask-form");
  var input = document.getElementById("question");
  var category = document.getElementById("category");
  var sendButton = document.getElementById("send");
  var newButton = document.getElementById("new-conversation");
  var tplQuestion = document.getElementById("tpl-question");
  var tplAnswer = document.getElementById("tpl-answer");

  var conversationId = null;
  var busy = false;
  var controller = null;

  // -- helpers ------------------------------------------------------------------------------

  function safeUrl(url) {
    // Only http(s) and same-site paths become links: never javascript:, data:, etc.
    if (typeof url !== "string" || !url) return null;
    if (/^\/(?!\/)/.test(url)) return url;
    try {
      var parsed = new URL(url, window.location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (e) { return null; }
  }

  function scrollToEnd() {
    window.requestAnimationFrame(function () {
      window.scrollTo({ top: document.body.scrollHeight, behavior: "auto" });
      thread.scrollTop = thread.scrollHeight;
    });
  }

  function seconds(value) {
    if (typeof value !== "number" || !isFinite(value)) return "";
    if (value < 1) return Math.round(value * 1000) + " ms";
    return value.toLocaleString(window.I18N.locale(), { maximumFractionDigits: value < 10 ? 1 : 0 }) + " " + t("chat.seconds");
  }

  // The reply's sources, one entry per article: {article_id, title, url, passages: [{n, chunk_id,
  // score, excerpt}]} where n is the citation number [n] of the answer. The older flat list of
  // passages ({article_id, title, url, chunk_id, score}, passage n at index n-1) is grouped here
  // the same way, so both shapes render alike.
  function groupSources(sources) {
    if (!Array.isArray(sources)) return [];
    sources = sources.filter(function (s) { return s && typeof s === "object"; });
    if (sources.length && sources.every(function (s) { return Array.isArray(s.passages); })) {
      return sources.map(function (s) {
        return { article_id: s.article_id, title: s.title, url: s.url,
                 passages: s.passages.filter(function (p) {
                   return p && typeof p.n === "number" && isFinite(p.n);
                 }) };
      });
    }
    var byArticle = Object.create(null);
    var articles = [];
    sources.forEach(function (s, i) {
      var key = "k" + String(s.article_id || s.url || i);
      var article = byArticle[key];
      if (!article) {
        article = byArticle[key] = { article_id: s.article_id, title: s.title, url: s.url, passages: [] };
        articles.push(article);
      }
      article.passages.push({ n: i + 1, chunk_id: s.chunk_id, score: s.score, excerpt: s.excerpt || "" });
    });
    return articles;
  }

  // Citation number -> its article.
  function articleByNumber(articles) {
    var map = Object.create(null);
    articles.forEach(function (a) { a.passages.forEach(function (p) { map[p.n] = a; }); });
    return map;
  }

  function newTabLink(href, text) {
    var a = document.createElement("a");
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.textContent = text;
    return a;
  }

  // Answer text with its citations [1], [2], [1, 3] or [1][3] turned into links to the sources.
  var CITATION = /\[(\d+(?:\s*[,;]\s*\d+)*)\]/g;

  function renderAnswer(container, text, byNumber) {
    var fragment = document.createDocumentFragment();
    var last = 0;
    var match;
    CITATION.lastIndex = 0;
    while ((match = CITATION.exec(text)) !== null) {
      if (match.index > last) fragment.appendChild(document.createTextNode(text.slice(last, match.index)));
      var numbers = match[1].split(/\s*[,;]\s*/);
      var links = numbers.map(function (n) {
        var index = parseInt(n, 10);
        var source = byNumber && byNumber[index];
        var href = source && safeUrl(source.url);
        if (!href) return null;
        var a = newTabLink(href, String(index));
        a.className = "cite";
        a.title = "[" + index + "] " + (source.title || "");
        a.dataset.source = String(index);
        return a;
      });
      if (links.every(Boolean)) {
        links.forEach(function (a) { fragment.appendChild(a); });
      } else {
        fragment.appendChild(document.createTextNode(match[0]));  // a number with no source
      }
      last = CITATION.lastIndex;
    }
    if (last < text.length) fragment.appendChild(document.createTextNode(text.slice(last)));
    container.replaceChildren(fragment);
  }

  // The numbers the answer cites that have a passage, in order of first citation.
  function citedNumbers(text, byNumber) {
    var seen = [];
    var match;
    CITATION.lastIndex = 0;
    while ((match = CITATION.exec(text)) !== null) {
      match[1].split(/\s*[,;]\s*/).forEach(function (n) {
        var index = parseInt(n, 10);
        if (byNumber[index] && seen.indexOf(index) < 0) seen.push(index);
      });
    }
    return seen;
  }

  // One entry per article the answer cites (all of them when it cites none), its cited
  // passages under it with their numbers.
  function renderSources(view, articles, text) {
    var box = view.querySelector(".sources");
    var list = view.querySelector(".sources-list");
    list.replaceChildren();
    var byNumber = articleByNumber(articles);
    var cited = citedNumbers(text || "", byNumber);
    var shown = 0;
    articles.forEach(function (article) {
      var passages = article.passages.filter(function (p) {
        return !cited.length || cited.indexOf(p.n) >= 0;
      }).sort(function (a, b) { return a.n - b.n; });
      if (!passages.length) return;
      var li = document.createElement("li");
      li.className = "source";
      if (article.article_id != null) li.dataset.articleId = String(article.article_id);
      li.dataset.numbers = passages.map(function (p) { return p.n; }).join(",");
      var href = safeUrl(article.url);
      var title = article.title || article.url || article.article_id || "?";
      var heading = document.createElement("span");
      heading.className = "source-title";
      if (href) {
        var a = newTabLink(href, String(title));
        a.title = t("chat.source_open");
        a.setAttribute("data-i18n-title", "chat.source_open");
        heading.appendChild(a);
      } else {
        heading.textContent = String(title);
      }
      li.appendChild(heading);
      var ol = document.createElement("ul");
      ol.className = "passages";
      passages.forEach(function (p) {
        var item = document.createElement("li");
        item.className = "passage";
        item.dataset.number = String(p.n);
        var number = document.createElement("span");
        number.className = "passage-n";
        number.textContent = String(p.n);
        item.appendChild(number);
        if (typeof p.excerpt === "string" && p.excerpt) {
          var excerpt = document.createElement("span");
          excerpt.className = "excerpt";
          excerpt.textContent = p.excerpt;
          item.appendChild(excerpt);
        }
        ol.appendChild(item);
      });
      li.appendChild(ol);
      list.appendChild(li);
      shown += 1;
    });
    var heading = view.querySelector(".sources-title");
    heading.textContent = t("chat.sources");
    heading.setAttribute("data-i18n", "chat.sources");
    box.hidden = shown === 0;
  }

  // A declined answer's close articles ({title, url}), when there are any.
  function renderRelated(view, related) {
    var box = view.querySelector(".related");
    var list = view.querySelector(".related-list");
    list.replaceChildren();
    (Array.isArray(related) ? related : []).forEach(function (r) {
      var href = r && safeUrl(r.url);
      if (!href) return;
      var li = document.createElement("li");
      li.appendChild(newTabLink(href, String(r.title || r.url)));
      list.appendChild(li);
    });
    var heading = view.querySelector(".related-title");
    heading.textContent = t("chat.related");
    heading.setAttribute("data-i18n", "chat.related");
    box.hidden = list.children.length === 0;
  }

  // Notices ({code, message}): known codes in the interface's language, others as sent.
  function renderNotices(view, notices) {
    var list = view.querySelector(".notices");
    list.replaceChildren();
    (Array.isArray(notices) ? notices : []).forEach(function (notice) {
      if (!notice || typeof notice !== "object") return;
      var code = typeof notice.code === "string" ? notice.code : "";
      var key = "notice." + code;
      var known = code && t(key) !== key;
      var text = known ? t(key) : (typeof notice.message === "string" ? notice.message : "");
      if (!text) return;
      var li = document.createElement("li");
      li.className = "notice";
      li.dataset.code = code;
      if (known) li.setAttribute("data-i18n", key);
      li.textContent = text;
      list.appendChild(li);
    });
    list.hidden = list.children.length === 0;
  }

  function showError(view, message) {
    var box = view.querySelector(".error");
    box.textContent = message;
    box.hidden = false;
    var answer = view.querySelector(".answer");
    if (!answer.textContent.trim()) answer.hidden = true;
    view.querySelector(".typing") && view.querySelector(".typing").remove();
  }

  function errorMessage(payload, status) {
    var text = payload && typeof payload.error === "string" ? payload.error : "";
    if (!text && typeof payload === "string") text = payload;
    var base = t("chat.error");
    if (text) return base + " " + text;
    return status ? base + " (" + t("chat.error_status") + " " + status + ")" : base;
  }

  // -- one exchange -------------------------------------------------------------------------

  function Exchange(question) {
    var q = tplQuestion.content.firstElementChild.cloneNode(true);
    q.querySelector(".bubble").textContent = question;
    var view = tplAnswer.content.firstElementChild.cloneNode(true);
    thread.appendChild(q);
    thread.appendChild(view);
    this.view = view;
    this.answerEl = view.querySelector(".answer");
    this.text = "";
    this.articles = [];
    this.covered = true;
    this.related = [];
    this.pending = false;
    this.tokens = 0;
    view.querySelectorAll(".thumb").forEach(function (b) {
      var key = b.getAttribute("data-value") === "1" ? "chat.up" : "chat.down";
      b.setAttribute("data-i18n-aria", key);
      b.setAttribute("data-i18n-title", key);
      b.setAttribute("aria-label", t(key));
      b.title = t(key);
    });
  }

  Exchange.prototype.redraw = function () {
    var self = this;
    if (self.pending || self.done) return;
    self.pending = true;
    window.requestAnimationFrame(function () {
      self.pending = false;
      if (self.done) return;
      renderAnswer(self.answerEl, self.text, articleByNumber(self.articles));
      self.answerEl.classList.add("streaming");
      self.view.dataset.partial = String(Number(self.view.dataset.partial || 0) + 1);
      scrollToEnd();
    });
  };

  // The sources event (and the JSON reply): {conversation_id, exchange_id, covered, sources,
  // related}; a reply without "covered" (older servers) covers the question.
  Exchange.prototype.onSources = function (data) {
    if (!data || typeof data !== "object") return;
    if (data.conversation_id) conversationId = data.conversation_id;
    if (data.covered === false) this.covered = false;
    if (data.sources) this.articles = this.covered ? groupSources(data.sources) : [];
    if (data.related) this.related = data.related;
  };

  Exchange.prototype.onToken = function (data) {
    if (data && typeof data.text === "string") {
      this.text += data.text;
      this.tokens += 1;
      this.redraw();
    }
  };

  Exchange.prototype.finish = function (result) {
    this.onSources(result);
    this.text = typeof result.answer === "string" ? result.answer : this.text;
    this.done = true;  // a streaming redraw still queued must not come after the final text
    renderAnswer(this.answerEl, this.text, articleByNumber(this.articles));
    this.answerEl.classList.remove("streaming");
    this.view.dataset.conversationId = conversationId || "";
    this.view.dataset.tokens = String(this.tokens);  // token events received (0: not streamed)
    if (result.exchange_id) this.view.dataset.exchangeId = result.exchange_id;
    if (result.mode) this.view.dataset.mode = result.mode;
    this.view.dataset.covered = String(this.covered);
    renderNotices(this.view, result.notices);
    renderSources(this.view, this.articles, this.text);
    renderRelated(this.view, this.covered ? [] : this.related);

    var mode = this.view.querySelector(".mode");
    var modeKey = result.mode === "llm" ? "chat.mode.llm" : "chat.mode.extractive";
    mode.replaceChildren();
    var label = document.createElement("span");
    label.setAttribute("data-i18n", modeKey);
    label.textContent = t(modeKey);
    mode.appendChild(label);
    var details = [result.mode === "llm" ? result.model : null, seconds(result.response_time)]
      .filter(Boolean).join(" · ");
    if (details) mode.appendChild(document.createTextNode(" · " + details));
    this.view.querySelector(".meta").hidden = false;
    this.bindFeedback(result.exchange_id, conversationId);
    scrollToEnd();
  };

  // Each answer is rated by its own exchange id, so older answers keep their thumbs.
  Exchange.prototype.bindFeedback = function (exchangeId, cid) {
    var view = this.view;
    var buttons = view.querySelectorAll(".thumb");
    var thanks = view.querySelector(".thanks");
    buttons.forEach(function (button) {
      button.addEventListener("click", function () {
        if (!exchangeId || view.dataset.rated) return;
        var value = parseInt(button.getAttribute("data-value"), 10);
        buttons.forEach(function (b) { b.disabled = true; });
        fetch("/feedback", {
          method: "POST",
          headers: { "Content-Type": "application/json", "Accept": "application/json" },
          body: JSON.stringify({ exchange_id: exchangeId, conversation_id: cid, feedback: value })
        }).then(function (response) {
          if (!response.ok) throw new Error(String(response.status));
          view.dataset.rated = String(value);
          button.classList.add("chosen");
          button.setAttribute("aria-pressed", "true");
          thanks.setAttribute("data-i18n", "chat.thanks");
          thanks.textContent = t("chat.thanks");
          thanks.classList.remove("failed");
          thanks.hidden = false;
        }).catch(function () {
          buttons.forEach(function (b) { b.disabled = false; });
          thanks.setAttribute("data-i18n", "chat.feedback_failed");
          thanks.textContent = t("chat.feedback_failed");
          thanks.classList.add("failed");
          thanks.hidden = false;
        });
      });
    });
  };

  Exchange.prototype.fail = function (message) {
    this.done = true;
    this.answerEl.classList.remove("streaming");
    if (this.text) renderAnswer(this.answerEl, this.text, articleByNumber(this.articles));
    showError(this.view, message);
    scrollToEnd();
  };

  // -- SSE over fetch -----------------------------------------------------------------------

  function parseBlock(block) {
    var event = "message";
    var data = [];
    block.split("\n").forEach(function (line) {
      if (!line || line.charAt(0) === ":") return;
      var colon = line.indexOf(":");
      var field = colon < 0 ? line : line.slice(0, colon);
      var value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    });
    if (!data.length) return null;
    var text = data.join("\n");
    var payload;
    try { payload = JSON.parse(text); } catch (e) { payload = text; }
    return { event: event, data: payload };
  }

  function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    function flush(final) {
      buffer = buffer.replace(/\r\n?/g, "\n");
      var index;
      while ((index = buffer.indexOf("\n\n")) >= 0) {
        var parsed = parseBlock(buffer.slice(0, index));
        buffer = buffer.slice(index + 2);
        if (parsed) onEvent(parsed);
      }
      if (final && buffer.trim()) {
        var last = parseBlock(buffer);
        buffer = "";
        if (last) onEvent(last);
      }
    }
    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) {
          buffer += decoder.decode();
          flush(true);
          return;
        }
        // A lone \r at the end may be the first half of \r\n: keep it for the next chunk.
        buffer += decoder.decode(chunk.value, { stream: true });
        var tail = buffer.slice(-1) === "\r" ? "\r" : "";
        if (tail) buffer = buffer.slice(0, -1);
        flush(false);
        buffer += tail;
        return pump();
      });
    }
    return pump();
  }

  // -- asking -------------------------------------------------------------------------------

  function setBusy(value) {
    busy = value;
    sendButton.disabled = value;
    form.classList.toggle("busy", value);
  }

  function ask(question) {
    if (busy) return;
    question = question.trim();
    if (!question) return;
    if (intro) intro.hidden = true;
    var exchange = new Exchange(question);
    scrollToEnd();
    setBusy(true);
    var body = { question: question };
    if (conversationId) body.conversation_id = conversationId;
    if (category.value) body.category = category.value;
    controller = window.AbortController ? new AbortController() : null;
    var finished = false;

    fetch("/question", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "text/event-stream" },
      body: JSON.stringify(body),
      signal: controller ? controller.signal : undefined
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      if (response.ok && type.indexOf("text/event-stream") === 0 && response.body) {
        return readEvents(response, function (ev) {
          if (finished) return;
          if (ev.event === "sources") exchange.onSources(ev.data);
          else if (ev.event === "token") exchange.onToken(ev.data);
          else if (ev.event === "done") { finished = true; exchange.finish(ev.data || {}); }
          else if (ev.event === "error") {
            finished = true;
            exchange.fail(errorMessage(ev.data, ev.data && ev.data.status));
          }
        }).then(function () {
          if (!finished) exchange.fail(t("chat.error_interrupted"));
        });
      }
      // Not a stream: a JSON answer (or an error before the stream started).
      return response.text().then(function (raw) {
        var payload = null;
        try { payload = JSON.parse(raw); } catch (e) { payload = null; }
        if (response.ok && payload && typeof payload.answer === "string") {
          exchange.finish(payload);
        } else {
          // An unknown conversation (404): the next question starts a new one.
          if (response.status === 404 && body.conversation_id) conversationId = null;
          exchange.fail(errorMessage(payload, response.status));
        }
        finished = true;
      });
    }).catch(function (err) {
      if (finished) return;
      exchange.fail(err && err.name === "AbortError" ? t("chat.error_interrupted") : t("chat.error_network"));
    }).then(function () {
      controller = null;
      setBusy(false);
      input.focus();
    });
  }

  function newConversation() {
    if (controller) controller.abort();
    conversationId = null;
    thread.querySelectorAll(".msg").forEach(function (m) { m.remove(); });
    if (intro) intro.hidden = false;
    input.value = "";
    autosize();
    input.focus();
  }

  function autosize() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 160) + "px";
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var question = input.value;
    if (!question.trim() || busy) return;
    input.value = "";
    autosize();
    ask(question);
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event("submit", { cancelable: true }));
    }
  });
  input.addEventListener("input", autosize);
  newButton.addEventListener("click", newConversation);
  document.querySelectorAll(".example").forEach(function (button) {
    button.addEventListener("click", function () { ask(button.textContent); });
  });

  // Exposed for tests and debugging (read-only view of the state).
  window.ArsonorChat = {
    conversationId: function () { return conversationId; },
    busy: function () { return busy; }
  };
})();
