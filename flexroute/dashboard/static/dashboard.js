// flexroute dashboard: the Billing page's card form (Stripe Elements + a SetupIntent).
// Loaded after Stripe.js (FLEXROUTE_STRIPE_JS_URL); no inline script, no build step.
(function () {
  "use strict";
  var form = document.getElementById("card-form");
  if (!form || typeof Stripe === "undefined") { return; }
  var stripe = Stripe(form.dataset.stripeKey);
  var card = stripe.elements().create("card");
  card.mount("#card-element");
  var errorBox = document.getElementById("card-error");
  var button = document.getElementById("card-submit");

  function fail(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    button.disabled = false;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    errorBox.hidden = true;
    button.disabled = true;
    var answer;
    try {
      var response = await fetch("/dashboard/billing/setup", {
        method: "POST",
        credentials: "same-origin",
        headers: {"x-csrf-token": form.dataset.csrf},
      });
      answer = await response.json();
      if (!response.ok) { fail(answer.error || "The card form is unavailable."); return; }
    } catch (err) {
      fail("Could not reach flexroute: " + err);
      return;
    }
    var result = await stripe.confirmCardSetup(answer.client_secret, {
      payment_method: {card: card},
    });
    if (result.error) {
      fail((result.error && result.error.message) || "The card was declined.");
      return;
    }
    document.getElementById("setup-intent").value = result.setupIntent.id;
    form.submit();  // the server makes the card the default and retries what is due
  });
})();
