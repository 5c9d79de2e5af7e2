/* sanlv: the little JavaScript every page shares. Plain ES5 for old Android browsers; every page works
   without it. */
(function () {
  "use strict";

  // <form data-confirm="..."> asks before it is sent (cancelling a round, disabling a user).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      return;
    }
    // A form whose server asks on a page of its own without JavaScript learns that the question was asked.
    var confirmed = question && form.querySelector('input[name="confirmed"]');
    if (confirmed) {
      confirmed.value = "yes";
    }
  }, true);

  // For pages that post JSON: the CSRF token the API wants in X-CSRFToken.
  window.sanlvCsrfToken = function () {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  };
})();
