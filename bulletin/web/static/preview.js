// bulletin preview: fetches the state, fills the page with textContent only (nothing is
// parsed as HTML), and refetches whenever the server says a file changed (server-sent events).
"use strict";

(function () {
  var contact = new URLSearchParams(location.search).get("contact") || "";
  var shownVersion = -1;
  var shownContact = null;
  var searchTimer = null;

  function $(id) { return document.getElementById(id); }

  function setText(id, text) { $(id).textContent = text == null ? "" : String(text); }

  function query(params) {
    var search = new URLSearchParams();
    Object.keys(params).forEach(function (key) {
      if (params[key] !== "" && params[key] != null) { search.set(key, params[key]); }
    });
    var text = search.toString();
    return text ? "?" + text : "";
  }

  function status(text) { setText("status", text); }

  function render(state) {
    setText("message", state.message);
    var list = $("problems");
    list.replaceChildren();
    state.problems.forEach(function (problem) {
      var item = document.createElement("li");
      item.textContent = problem;
      list.appendChild(item);
    });
    setText("problem-count", state.problems.length ? "(" + state.problems.length + ")" : "");
    $("no-problems").hidden = state.problems.length > 0;
    $("broken").hidden = !state.broken;
    if (!state.ready) {
      status("The message cannot be shown yet: see the problems.");
      return;
    }
    setText("sender", state.sender);
    setText("subject", state.subject);
    setText("preheader", state.preheader || "(none: the inbox shows the first words)");
    setText("text", state.text);
    var who = state.contact;
    setText("who", who ? (who.name || "(no name)") + " · " + (who.email || "postal only") +
      (who.ward ? " · " + who.ward : "") : "No contact in the audience");
    setText("audience", state.audience + " contact(s) in the audience: " + state.emailable +
      " by email, " + state.postal + " by post.");
    setText("postal", "(" + state.postal + " postal-only contact(s))");
    var key = who ? who.key : "";
    $("print-link").href = "/print.pdf" + query({ contact: key, v: state.version });
    $("letters-link").href = "/letters.pdf" + query({ v: state.version });
    if (state.version !== shownVersion || key !== shownContact) {
      var src = "/email" + query({ contact: key, v: state.version });
      $("desktop").src = src;
      $("phone").src = src;
      shownVersion = state.version;
      shownContact = key;
    }
    document.body.dataset.version = String(state.version);
    status((state.broken ? "Showing the last good version · " : "Up to date · ") +
      "version " + state.version);
  }

  function refresh() {
    return fetch("/state" + query({ contact: contact }), { cache: "no-store" })
      .then(function (response) { return response.json(); })
      .then(render)
      .catch(function () { status("The preview server is not answering."); });
  }

  function choose(key) {
    contact = key;
    history.replaceState(null, "", location.pathname + query({ contact: key }));
    Array.prototype.forEach.call($("results").querySelectorAll("button"), function (button) {
      button.setAttribute("aria-pressed", String(button.dataset.key === key));
    });
    refresh();
  }

  function showResults(found) {
    var list = $("results");
    list.replaceChildren();
    found.contacts.forEach(function (person) {
      var item = document.createElement("li");
      var button = document.createElement("button");
      button.type = "button";
      button.dataset.key = person.key;
      button.setAttribute("aria-pressed", String(person.key === contact));
      button.textContent = person.name || person.email || person.where;
      var meta = document.createElement("span");
      meta.className = "meta";
      meta.textContent = [person.email || "postal only", person.ward].filter(Boolean).join(" · ");
      button.appendChild(meta);
      button.addEventListener("click", function () { choose(person.key); });
      item.appendChild(button);
      list.appendChild(item);
    });
    if (found.total > found.contacts.length) {
      var more = document.createElement("li");
      more.className = "small";
      more.textContent = (found.total - found.contacts.length) + " more: type more of a name.";
      list.appendChild(more);
    }
  }

  function search() {
    var text = $("search").value;
    fetch("/contacts" + query({ q: text }), { cache: "no-store" })
      .then(function (response) { return response.json(); })
      .then(showResults)
      .catch(function () {});
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("search").addEventListener("input", function () {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(search, 120);
    });
    refresh().then(search);
    var updates = new EventSource("/updates");
    updates.onmessage = function () { refresh().then(search); };
    updates.onerror = function () { status("Reconnecting to the preview server…"); };
  });
})();
