// Pitcrew console: progressive enhancement only; every page works without it.
(function () {
  "use strict";
  // Copy buttons: <button data-copy="#element-id">
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var text = (source.value !== undefined ? source.value : source.textContent).trim();
    var done = function () {
      var old = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = old; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { select(source); });
    } else {
      select(source);
    }
  });
  function select(element) {
    if (element.select) { element.select(); }
    else {
      var range = document.createRange();
      range.selectNodeContents(element);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
  }
  // Confirm before destructive posts: <form data-confirm="Really?">, or on one
  // of its buttons: <button data-confirm="Really?">.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    var message = (button && button.getAttribute("data-confirm")) ||
      (form.getAttribute && form.getAttribute("data-confirm"));
    if (message && !window.confirm(message)) event.preventDefault();
  });
  // Filters: submit a filter form when a select changes (there is a button too).
  document.addEventListener("change", function (event) {
    if (event.target.matches("form.filters select")) event.target.form.requestSubmit();
  });
  // Move focus to the error summary so keyboard and screen reader users land on it.
  document.addEventListener("DOMContentLoaded", function () {
    var summary = document.getElementById("error-summary");
    if (summary) summary.focus();
  });
})();
// Targeting editor: show only the inputs of the chosen serve kind.
(function () {
  "use strict";
  function sync(select) {
    var box = select.closest("fieldset.serve");
    if (!box) return;
    box.querySelectorAll("[data-serve]").forEach(function (part) {
      part.hidden = part.getAttribute("data-serve") !== select.value;
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("fieldset.serve select[name$='.kind']").forEach(sync);
  });
  document.addEventListener("change", function (event) {
    if (event.target.matches("fieldset.serve select[name$='.kind']")) sync(event.target);
  });
})();
// Times typed in UTC (<input data-utc>): show the same moment in the browser's time zone.
(function () {
  "use strict";
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function offset(date) {
    var minutes = -date.getTimezoneOffset();
    var sign = minutes < 0 ? "-" : "+";
    minutes = Math.abs(minutes);
    return "UTC" + sign + pad(Math.floor(minutes / 60)) + ":" + pad(minutes % 60);
  }
  function show(input) {
    var note = input.parentNode.querySelector(".local-time");
    if (!note) {
      note = document.createElement("small");
      note.className = "help local-time";
      note.setAttribute("aria-live", "polite");
      input.parentNode.appendChild(note);
    }
    var match = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})/.exec(input.value);
    if (!match) { note.textContent = "Your browser's time zone: " + offset(new Date()) + "."; return; }
    var date = new Date(Date.UTC(+match[1], +match[2] - 1, +match[3], +match[4], +match[5]));
    note.textContent = "= " + date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      " " + pad(date.getHours()) + ":" + pad(date.getMinutes()) + " in your browser's time zone (" + offset(date) + ").";
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("input[data-utc]").forEach(show);
  });
  document.addEventListener("input", function (event) {
    if (event.target.matches("input[data-utc]")) show(event.target);
  });
})();
