// casgate's sign-in page: one self-contained document (inline CSS, no script, no external
// assets), labelled fields with autocomplete hints, the error announced to screen readers,
// readable at 400% zoom and in forced-colours mode.

import { escapeHtml } from '../util/html.js'

/** LoginPageOptions fill the page. */
export interface LoginPageOptions {
  csrfToken: string
  returnUrl: string
  user?: string
  /** Shown in a role="alert" box above the form. */
  error?: string
  notice?: string
  host?: string
}

export function loginPage (options: LoginPageOptions): string {
  const message = options.error !== undefined
    ? `<p class="error" role="alert" id="message">${escapeHtml(options.error)}</p>`
    : options.notice !== undefined ? `<p class="notice" role="status" id="message">${escapeHtml(options.notice)}</p>` : ''
  const described = message === '' ? '' : ' aria-describedby="message"'
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Sign in${options.host ? ` to ${escapeHtml(options.host)}` : ''}</title>
<style>
  :root { color-scheme: light dark; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
  body { margin: 0; min-height: 100vh; display: grid; place-items: center; background: Canvas; color: CanvasText; }
  main { width: min(24rem, 100% - 2rem); padding: 2rem 0; }
  h1 { font-size: 1.5rem; font-weight: 600; margin: 0 0 1.5rem; }
  label { display: block; font-weight: 600; margin: 1rem 0 .25rem; }
  .hint { font-weight: 400; font-size: .875rem; opacity: .8; }
  input { box-sizing: border-box; width: 100%; font: inherit; padding: .6rem .7rem; border: 1px solid GrayText; border-radius: 4px; background: Field; color: FieldText; }
  input:focus-visible, button:focus-visible { outline: 3px solid Highlight; outline-offset: 2px; }
  button { margin-top: 1.5rem; width: 100%; font: inherit; font-weight: 600; padding: .7rem; border: 0; border-radius: 4px; background: #0a5bb5; color: #fff; cursor: pointer; }
  .error, .notice { padding: .75rem; border-radius: 4px; border: 1px solid; }
  .error { border-color: #b00020; }
  @media (forced-colors: active) { button { border: 1px solid ButtonText; } }
</style>
</head>
<body>
<main>
<h1>Sign in</h1>
${message}
<form method="post" action="/casgate/logon" autocomplete="on">
<input type="hidden" name="csrf" value="${escapeHtml(options.csrfToken)}">
<input type="hidden" name="url" value="${escapeHtml(options.returnUrl)}">
<label for="username">User name <span class="hint">(domain\\user or user@domain)</span></label>
<input id="username" name="username" type="text" autocomplete="username" autocapitalize="none" spellcheck="false" required value="${escapeHtml(options.user ?? '')}"${described}${options.user ? '' : ' autofocus'}>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required${options.user ? ' autofocus' : ''}>
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
`
}
