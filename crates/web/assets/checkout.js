// Shipping and payment: a progressive enhancement. Without this script,
// choosing another shipping method and pressing "Update the total" posts the
// form and the page comes back with the new total. With it, the same post
// is made as soon as a method is chosen and the totals, the amount sent with
// the payment and the Pay button are replaced by those of the page that
// comes back, so the total shown is always the one that will be charged.
(function () {
  var form = document.getElementById("pay");
  var update = document.getElementById("update-shipping");
  if (!form || !update || !window.fetch || !window.DOMParser || !window.URLSearchParams) return;
  var pay = document.getElementById("pay-button");
  var status = document.getElementById("total-status");
  update.parentNode.hidden = true;
  var asked = 0;

  function swap(page, id, attribute) {
    var now = document.getElementById(id);
    var next = page.getElementById(id);
    if (!now || !next) return false;
    if (attribute) now.setAttribute(attribute, next.getAttribute(attribute));
    else now.innerHTML = next.innerHTML;
    return true;
  }

  function choose(radio) {
    var mine = ++asked;
    var body = new URLSearchParams();
    body.append("csrf", form.elements.csrf.value);
    body.append("shipping_method", radio.value);
    body.append("update", "shipping");
    pay.disabled = true;
    fetch(form.action, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "content-type": "application/x-www-form-urlencoded", accept: "text/html" },
    })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        if (mine !== asked) return;
        var page = new DOMParser().parseFromString(html, "text/html");
        var fresh = swap(page, "order-totals") && swap(page, "total-amount", "value") && swap(page, "total-currency", "value") && swap(page, "pay-button");
        if (!fresh) {
          // Not the payment page (a refusal, an expired form): show it as it is.
          window.location.assign(form.action);
          return;
        }
        if (status) status.textContent = "The total is now " + pay.textContent.replace(/^Pay /, "") + ".";
        pay.disabled = false;
      })
      .catch(function () {
        if (mine === asked) window.location.assign(form.action);
      });
  }

  document.querySelectorAll("input[name=shipping_method]").forEach(function (radio) {
    radio.addEventListener("change", function () {
      if (radio.checked) choose(radio);
    });
  });
})();
