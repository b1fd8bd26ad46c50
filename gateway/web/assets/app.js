// cartgate — the few behaviours that earn JavaScript: the decline form asks for details
// when the reason is "Other" (the server checks it too).
document.addEventListener('DOMContentLoaded', function () {
  document.querySelectorAll('form[action$="/decline"]').forEach(function (form) {
    var text = form.querySelector('input[name="text"]');
    if (!text) return;
    form.querySelectorAll('input[name="code"]').forEach(function (radio) {
      radio.addEventListener('change', function () { text.required = radio.value === 'other' && radio.checked; });
    });
  });
});
