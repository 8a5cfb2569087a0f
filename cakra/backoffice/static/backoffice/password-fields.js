/* Cakra back office: a show/hide button for password fields and a live hint
   for a new password (ASVS V2.1.8, V2.1.12).

   Loaded from our own origin with `defer` (the CSP allows script-src 'self'
   only, no inline script). Every text comes from data- attributes the
   template renders through Django's translations, so this file holds no
   language. Without JavaScript the page still works: the rules are plain
   text and the server checks every one of them. Nothing is sent anywhere;
   the hint only reads the field. Texts are set with textContent, never as
   markup. */
(function () {
  "use strict";

  var STRONG_EXTRA = 4; // characters beyond the minimum that earn "strong"
  var STRONG_AT_LEAST = 16;

  function addToggles(form) {
    var inputs = form.querySelectorAll("input[type=password]");
    Array.prototype.forEach.call(inputs, function (input) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "reveal";
      button.setAttribute("aria-controls", input.id);
      function setVisible(visible) {
        input.type = visible ? "text" : "password";
        button.setAttribute("aria-pressed", visible ? "true" : "false");
        button.textContent = visible ? form.dataset.hideLabel : form.dataset.showLabel;
        button.title = visible ? form.dataset.hideTitle : form.dataset.showTitle;
        button.setAttribute("aria-label", button.title);
      }
      button.addEventListener("click", function () {
        setVisible(input.type === "password");
        input.focus();
      });
      setVisible(false);
      input.insertAdjacentElement("afterend", button);
    });
    // Hidden again before sending, so no browser keeps the value as plain text
    // (form history stores text fields, not password fields).
    form.addEventListener("submit", function () {
      Array.prototype.forEach.call(inputs, function (input) {
        input.type = "password";
      });
    });
  }

  function describe(input, hint) {
    var ids = (input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
    if (ids.indexOf(hint.id) === -1) {
      ids.push(hint.id);
      input.setAttribute("aria-describedby", ids.join(" "));
    }
  }

  function show(hint, level, text) {
    hint.hidden = text === "";
    hint.textContent = text;
    hint.className = "small strength" + (level ? " strength-" + level : "");
  }

  function addStrengthHint(hint) {
    var input = document.getElementById(hint.dataset.passwordStrength);
    if (!input) return;
    var minimum = parseInt(hint.dataset.minLength, 10) || 0;
    var strongAt = Math.max(minimum + STRONG_EXTRA, STRONG_AT_LEAST);
    describe(input, hint);
    input.addEventListener("input", function () {
      // Characters as the server counts them (code points, not UTF-16 units).
      var length = Array.from(input.value).length;
      if (length === 0) {
        show(hint, "", "");
      } else if (length < minimum) {
        show(hint, "weak", hint.dataset.tooShort.replace("{count}", String(length)));
      } else if (/^[0-9]+$/.test(input.value)) {
        show(hint, "weak", hint.dataset.numeric);
      } else if (length < strongAt) {
        show(hint, "fair", hint.dataset.fair);
      } else {
        show(hint, "strong", hint.dataset.strong);
      }
    });
  }

  function addMatchHint(hint) {
    var second = document.getElementById(hint.dataset.passwordMatch);
    var first = document.getElementById(hint.dataset.first);
    if (!second || !first) return;
    describe(second, hint);
    function update() {
      if (second.value === "") {
        show(hint, "", "");
      } else if (second.value === first.value) {
        show(hint, "strong", hint.dataset.match);
      } else {
        show(hint, "weak", hint.dataset.mismatch);
      }
    }
    first.addEventListener("input", update);
    second.addEventListener("input", update);
  }

  document.querySelectorAll("form[data-password-form]").forEach(addToggles);
  document.querySelectorAll("[data-password-strength]").forEach(addStrengthHint);
  document.querySelectorAll("[data-password-match]").forEach(addMatchHint);
})();
