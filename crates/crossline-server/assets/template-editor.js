// Crossline console: the template editor's live preview. 300 ms after the author stops typing, the
// source is rendered on the server (POST /templates/preview) for the chosen profile and shown in
// the sandboxed frame; a fault is shown with its line and column while the last good preview stays.
// Without this file the page still works: the server rendered the first preview and Save is a form.

const editor = document.querySelector('[data-template-editor]');

if (editor) {
  const form = editor.querySelector('form');
  const frame = editor.querySelector('[data-testid="template-preview"]');
  const fault = editor.querySelector('[data-testid="template-error"]');
  const subject = editor.querySelector('[data-preview-subject]');
  const profile = editor.querySelector('[data-preview-profile]');
  const state = editor.querySelector('[data-preview-state]');
  const field = (name) => form.elements.namedItem(name)?.value;
  let timer = 0;
  let latest = 0;

  const showFault = (message, line) => {
    fault.textContent = message;
    fault.dataset.line = line ?? '';
    fault.hidden = false;
    state.textContent = 'showing the last version that rendered';
  };

  const show = (answer) => {
    if (answer.error) {
      showFault(answer.error, answer.line);
      return;
    }
    fault.hidden = true;
    fault.textContent = '';
    frame.srcdoc = answer.srcdoc;
    if (subject) subject.textContent = answer.subject ?? '';
    if (profile) {
      profile.textContent = answer.profile_id;
      profile.href = answer.profile_id === 'prf_preview' ? '/profiles' : `/profiles/${encodeURIComponent(answer.profile_id)}`;
    }
    state.textContent = 'up to date';
  };

  const render = async () => {
    const request = ++latest;
    state.textContent = 'rendering…';
    let answer;
    try {
      const response = await fetch(editor.dataset.previewUrl, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          Accept: 'application/json',
          'X-CSRF-Token': document.querySelector('meta[name="csrf-token"]')?.content ?? '',
        },
        body: JSON.stringify({
          template_id: editor.dataset.templateId,
          subject: field('subject') ?? null,
          body: field('body') ?? '',
          profile_id: field('profile_id') || null,
        }),
      });
      // A session that ended answers with the login page, not JSON.
      if (!(response.headers.get('content-type') || '').startsWith('application/json')) {
        throw new Error(`the console answered ${response.status}; if your session ended, reload the page`);
      }
      answer = await response.json();
    } catch (error) {
      answer = { error: `The preview could not be rendered: ${error.message}` };
    }
    // An older request answering late must not overwrite a newer preview.
    if (request === latest) show(answer);
  };

  form.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(render, 300);
  });
}
