/* UI labels in French and English. French by default; English when the browser prefers it,
   and a FR/EN toggle (remembered in localStorage); the widget's embed page fixes it
   (<html data-ui-lang>). Elements carry data-i18n (text),
   data-i18n-placeholder, data-i18n-aria (aria-label) or data-i18n-title. */
(function () {
  "use strict";

  var STRINGS = {
    fr: {
      "nav.chat": "Assistant",
      "nav.dashboard": "Tableau de bord",
      "lang.switch": "Switch to English",
      "lang.other": "EN",
      "chat.title": "Posez votre question sur le home studio",
      "chat.subtitle": "Les réponses viennent des articles du blog Arsonor, avec leurs sources.",
      "chat.example1": "Comment régler un compresseur sur une voix ?",
      "chat.example2": "Quel niveau en LUFS pour un podcast ?",
      "chat.example3": "What does an LFO do on a synth?",
      "chat.category": "Catégorie",
      "chat.all": "Tous",
      "chat.new": "Nouvelle conversation",
      "chat.question": "Votre question",
      "chat.placeholder": "Votre question… (Entrée pour envoyer)",
      "chat.send": "Envoyer",
      "chat.sources": "Sources",
      "chat.source_open": "Ouvrir l'article (nouvel onglet)",
      "chat.mode.llm": "Réponse générée",
      "chat.mode.extractive": "Extraits des articles",
      "chat.up": "Réponse utile",
      "chat.down": "Réponse pas utile",
      "chat.thanks": "Merci pour votre avis !",
      "chat.feedback_failed": "Avis non enregistré, réessayez.",
      "chat.error": "Désolé, la question n'a pas pu aboutir.",
      "chat.error_network": "Le serveur ne répond pas. Vérifiez votre connexion et réessayez.",
      "chat.error_interrupted": "La réponse a été interrompue. Réessayez.",
      "chat.error_status": "Erreur",
      "chat.related": "Articles proches",
      "chat.passage": "Passage",
      "notice.quoted_in_french": "Passages cités du blog en français",
      "notice.llm_budget_reached": "Plafond de dépense du jour atteint : réponse faite d'extraits des articles",
      "widget.title": "Demandez au blog",
      "widget.close": "Fermer",
      "chat.seconds": "s",
      "article.note": "Article de démonstration du corpus de l'assistant.",
      "article.back": "← Retour à l'assistant",
      "notfound.title": "Article introuvable",
      "notfound.text": "Aucun article ne porte l'identifiant",
      "dash.title": "Tableau de bord",
      "dash.range": "Période",
      "dash.h1": "1 heure",
      "dash.h24": "24 heures",
      "dash.d7": "7 jours",
      "dash.d30": "30 jours",
      "dash.refresh": "Actualiser",
      "dash.loading": "Chargement…",
      "dash.updated": "Mis à jour à",
      "dash.failed": "Données indisponibles",
      "dash.exchanges": "Échanges",
      "dash.conversations": "conversations",
      "dash.feedback": "Avis",
      "dash.feedback_hint": "positifs / négatifs",
      "dash.feedback_rate": "Taux d'avis",
      "dash.feedback_detail": "échanges notés",
      "dash.error_rate": "Taux d'erreur",
      "dash.errors": "erreurs",
      "dash.error": "erreur",
      "dash.no_model": "aucun (extractif)",
      "dash.relevance": "Pertinence (juge)",
      "dash.modes": "Mode de réponse",
      "dash.models": "Modèles utilisés",
      "dash.response_time": "Temps de réponse (moyenne, p95)",
      "dash.retrieval_time": "Latence recherche et LLM",
      "dash.cost": "Coût LLM (USD)",
      "dash.llm_cost": "Coût LLM",
      "dash.unknown_cost": "échanges de coût inconnu",
      "dash.error_rate_time": "Taux d'erreur dans le temps",
      "dash.errors_by_status": "Erreurs par statut",
      "dash.col.status": "Statut",
      "dash.col.count": "Échanges",
      "dash.col.last_seen": "Dernière fois",
      "dash.col.last_error": "Dernière erreur",
      "dash.no_errors": "Aucune erreur sur cette période",
      "dash.retrieval_avg": "recherche (moyenne)",
      "dash.retrieval_p95": "recherche (p95)",
      "dash.llm_avg": "LLM (moyenne)",
      "dash.error_rate_series": "taux d'erreur",
      "dash.tokens": "Tokens",
      "dash.last": "Dernières conversations",
      "dash.col.time": "Heure",
      "dash.col.question": "Question",
      "dash.col.answer": "Réponse",
      "dash.col.relevance": "Pertinence",
      "dash.col.mode": "Mode",
      "dash.col.time_taken": "Durée",
      "dash.none": "Aucune donnée sur cette période",
      "dash.tz": "Heures affichées dans le fuseau",
      "dash.avg": "moyenne",
      "dash.p95": "p95",
      "dash.answer_cost": "réponses",
      "dash.judge_cost": "juge",
      "dash.prompt": "prompt",
      "dash.completion": "complétion",
      "dash.judge_tokens": "juge",
      "rel.RELEVANT": "Pertinente",
      "rel.PARTLY_RELEVANT": "Partielle",
      "rel.NON_RELEVANT": "Non pertinente",
      "rel.unjudged": "Non jugée",
      "mode.llm": "LLM",
      "mode.extractive": "Extractif",
      "mode.none": "Aucun",
      "mode.unknown": "Inconnu",
      "status.error": "erreur"
    },
    en: {
      "nav.chat": "Assistant",
      "nav.dashboard": "Dashboard",
      "lang.switch": "Passer en français",
      "lang.other": "FR",
      "chat.title": "Ask your home-studio question",
      "chat.subtitle": "Answers come from the Arsonor blog's articles, with their sources.",
      "chat.example1": "How do I set a compressor on vocals?",
      "chat.example2": "What LUFS level for a podcast?",
      "chat.example3": "Que fait un LFO sur un synthé ?",
      "chat.category": "Category",
      "chat.all": "All",
      "chat.new": "New conversation",
      "chat.question": "Your question",
      "chat.placeholder": "Your question… (Enter to send)",
      "chat.send": "Send",
      "chat.sources": "Sources",
      "chat.source_open": "Open the article (new tab)",
      "chat.mode.llm": "Generated answer",
      "chat.mode.extractive": "Excerpts from the articles",
      "chat.up": "Helpful answer",
      "chat.down": "Unhelpful answer",
      "chat.thanks": "Thanks for your feedback!",
      "chat.feedback_failed": "Feedback not saved, please retry.",
      "chat.error": "Sorry, the question could not be answered.",
      "chat.error_network": "The server does not answer. Check your connection and try again.",
      "chat.error_interrupted": "The answer was interrupted. Please try again.",
      "chat.error_status": "Error",
      "chat.related": "Related articles",
      "chat.passage": "Passage",
      "notice.quoted_in_french": "Passages quoted from the blog in French",
      "notice.llm_budget_reached": "Today's spending cap is reached: the answer is made of excerpts from the articles",
      "widget.title": "Ask the blog",
      "widget.close": "Close",
      "chat.seconds": "s",
      "article.note": "Demo article from the assistant's corpus.",
      "article.back": "← Back to the assistant",
      "notfound.title": "Article not found",
      "notfound.text": "No article has the id",
      "dash.title": "Dashboard",
      "dash.range": "Range",
      "dash.h1": "1 hour",
      "dash.h24": "24 hours",
      "dash.d7": "7 days",
      "dash.d30": "30 days",
      "dash.refresh": "Refresh",
      "dash.loading": "Loading…",
      "dash.updated": "Updated at",
      "dash.failed": "Data unavailable",
      "dash.exchanges": "Exchanges",
      "dash.conversations": "conversations",
      "dash.feedback": "Feedback",
      "dash.feedback_hint": "positive / negative",
      "dash.feedback_rate": "Feedback rate",
      "dash.feedback_detail": "exchanges rated",
      "dash.error_rate": "Error rate",
      "dash.errors": "errors",
      "dash.error": "error",
      "dash.no_model": "none (extractive)",
      "dash.relevance": "Relevance (judge)",
      "dash.modes": "Answer mode",
      "dash.models": "Models used",
      "dash.response_time": "Response time (avg, p95)",
      "dash.retrieval_time": "Retrieval and LLM latency",
      "dash.cost": "LLM cost (USD)",
      "dash.llm_cost": "LLM cost",
      "dash.unknown_cost": "exchanges of unknown cost",
      "dash.error_rate_time": "Error rate over time",
      "dash.errors_by_status": "Errors by status",
      "dash.col.status": "Status",
      "dash.col.count": "Exchanges",
      "dash.col.last_seen": "Last seen",
      "dash.col.last_error": "Last error",
      "dash.no_errors": "No error in this range",
      "dash.retrieval_avg": "retrieval (avg)",
      "dash.retrieval_p95": "retrieval (p95)",
      "dash.llm_avg": "LLM (avg)",
      "dash.error_rate_series": "error rate",
      "dash.tokens": "Tokens",
      "dash.last": "Last conversations",
      "dash.col.time": "Time",
      "dash.col.question": "Question",
      "dash.col.answer": "Answer",
      "dash.col.relevance": "Relevance",
      "dash.col.mode": "Mode",
      "dash.col.time_taken": "Duration",
      "dash.none": "No data in this range",
      "dash.tz": "Times shown in time zone",
      "dash.avg": "average",
      "dash.p95": "p95",
      "dash.answer_cost": "answers",
      "dash.judge_cost": "judge",
      "dash.prompt": "prompt",
      "dash.completion": "completion",
      "dash.judge_tokens": "judge",
      "rel.RELEVANT": "Relevant",
      "rel.PARTLY_RELEVANT": "Partly relevant",
      "rel.NON_RELEVANT": "Not relevant",
      "rel.unjudged": "Not judged",
      "mode.llm": "LLM",
      "mode.extractive": "Extractive",
      "mode.none": "None",
      "mode.unknown": "Unknown",
      "status.error": "error"
    }
  };

  function initialLang() {
    // A page whose language is fixed by the server (the widget's embed page: the blog owner
    // chose it) keeps it; elsewhere the reader's choice, then the browser's.
    var fixed = document.documentElement.getAttribute("data-ui-lang");
    if (fixed === "fr" || fixed === "en") return fixed;
    var stored = null;
    try { stored = window.localStorage.getItem("arsonor.lang"); } catch (e) { /* private mode */ }
    if (stored === "fr" || stored === "en") return stored;
    var prefs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "fr"];
    for (var i = 0; i < prefs.length; i++) {
      var code = String(prefs[i] || "").toLowerCase().slice(0, 2);
      if (code === "fr" || code === "en") return code;
    }
    return "fr";
  }

  var lang = initialLang();
  var listeners = [];

  function t(key) {
    var table = STRINGS[lang] || STRINGS.fr;
    return Object.prototype.hasOwnProperty.call(table, key) ? table[key]
      : (Object.prototype.hasOwnProperty.call(STRINGS.fr, key) ? STRINGS.fr[key] : key);
  }

  function apply(root) {
    root = root || document;
    document.documentElement.lang = lang;
    root.querySelectorAll("[data-i18n]").forEach(function (el) { el.textContent = t(el.getAttribute("data-i18n")); });
    root.querySelectorAll("[data-i18n-placeholder]").forEach(function (el) { el.setAttribute("placeholder", t(el.getAttribute("data-i18n-placeholder"))); });
    root.querySelectorAll("[data-i18n-aria]").forEach(function (el) { el.setAttribute("aria-label", t(el.getAttribute("data-i18n-aria"))); });
    root.querySelectorAll("[data-i18n-title]").forEach(function (el) { el.setAttribute("title", t(el.getAttribute("data-i18n-title"))); });
    var toggle = document.getElementById("lang-toggle");
    if (toggle) {
      toggle.textContent = t("lang.other");
      toggle.setAttribute("aria-label", t("lang.switch"));
      toggle.setAttribute("title", t("lang.switch"));
    }
  }

  function setLang(next) {
    if (next !== "fr" && next !== "en") return;
    lang = next;
    try { window.localStorage.setItem("arsonor.lang", next); } catch (e) { /* ignore */ }
    apply(document);
    listeners.forEach(function (fn) { fn(lang); });
  }

  window.I18N = {
    t: t,
    apply: apply,
    setLang: setLang,
    lang: function () { return lang; },
    locale: function () { return lang === "en" ? "en-GB" : "fr-FR"; },
    onChange: function (fn) { listeners.push(fn); }
  };

  function init() {
    apply(document);
    var toggle = document.getElementById("lang-toggle");
    if (toggle) toggle.addEventListener("click", function () { setLang(lang === "fr" ? "en" : "fr"); });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
