// Card payments with Stripe Elements, when the shop has Stripe set up. The
// card number goes from Stripe's own field (a frame of js.stripe.com) to
// Stripe, which answers with a single-use token; only that token is posted
// to the shop. Without this script (or without Stripe.js) the card choice
// stays hidden and the page works with the other ways to pay.
(function () {
  var box = document.getElementById("stripe-card");
  if (!box || typeof window.Stripe !== "function") return;
  var form = box.closest("form");
  var choice = document.getElementById("pay-card");
  var provider = document.getElementById("provider");
  var errors = document.getElementById("card-errors");
  var stripe = window.Stripe(box.getAttribute("data-key"));
  var card = stripe.elements().create("card", { hidePostalCode: true });
  box.hidden = false;
  card.mount("#card-element");
  card.on("change", function (e) {
    errors.textContent = e.error ? e.error.message : "";
    errors.hidden = !e.error;
    if (!e.empty) choice.checked = true;
  });
  var paying = false;
  form.addEventListener("submit", function (e) {
    // "Update the total" only reprices the shipping: no card is read for it.
    if (!choice.checked || paying || (e.submitter && e.submitter.name === "update")) return;
    e.preventDefault();
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    stripe.createToken(card).then(function (result) {
      if (result.error) {
        errors.textContent = result.error.message;
        errors.hidden = false;
        button.disabled = false;
        return;
      }
      choice.value = result.token.id;
      provider.value = "stripe";
      paying = true;
      form.submit();
    });
  });
})();
