import { randomBytes } from 'node:crypto'

// The admin listener's page (GET /): one self-contained document, no external asset, its script
// and style allowed by a nonce and nothing else (CSP). It signs in with the admin token once (a
// session cookie follows), then reads /status and /affinity every 5 s and redraws in place:
// the health grid (servers × vdirs, why a cell is red and since when), drain and enable with a
// deadline, affinity spread, certificates and Extended Protection, rule blocks, last errors.
// Plain HTML controls in document order: usable by keyboard and screen reader; the grid says
// "up"/"down" in words, not only in colour.

const STYLE = `
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;background:#fafafa}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.6rem}
table{border-collapse:collapse;margin:.4rem 0}th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
td.up{background:#dff3df}td.down{background:#f6d2d2;font-weight:600}td.drained{background:#f3ead0}
button,input,select{font:inherit;padding:.15rem .4rem}
:focus-visible{outline:3px solid #1a5fb4;outline-offset:2px}
.note{color:#555}.error{color:#a00;font-weight:600}[hidden]{display:none}
`

const SCRIPT = `
const $ = (id) => document.getElementById(id)
const el = (tag, text, attrs = {}) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); return e }
const json = { 'content-type': 'application/json' }
async function call (path, body) {
  const response = await fetch(path, body === undefined ? {} : { method: 'POST', headers: json, body: JSON.stringify(body) })
  if (response.status === 401) { signedOut(); throw new Error('signed out') }
  const data = await response.json()
  if (!response.ok) throw new Error(data.error || data.message || response.statusText)
  return data
}
function signedOut () { $('signin').hidden = false; $('dashboard').hidden = true; $('token').focus() }
function say (text) { $('said').textContent = text }
function table (head, rows) {
  const t = el('table'); const tr = el('tr'); for (const h of head) tr.append(el('th', h, { scope: 'col' })); t.append(tr)
  for (const row of rows) { const r = el('tr'); for (const c of row) r.append(c instanceof Node ? c : el('td', String(c))); t.append(r) }
  return t
}
function render (status, affinity) {
  const vdirs = [...new Set(status.health.map((h) => h.vdir))]
  const servers = [...new Set(status.health.map((h) => h.backend))]
  const drained = new Map(status.drained.map((d) => [d.backend, d]))
  const grid = el('table', undefined, { id: 'health' })
  const head = el('tr'); head.append(el('th', 'server', { scope: 'col' })); for (const v of vdirs) head.append(el('th', v, { scope: 'col' })); head.append(el('th', 'maintenance', { scope: 'col' })); grid.append(head)
  for (const server of servers) {
    const row = el('tr'); row.append(el('th', server, { scope: 'row' }))
    const d = drained.get(server)
    for (const v of vdirs) {
      const h = status.health.find((x) => x.backend === server && x.vdir === v)
      const isDrained = d && (d.vdirs.includes('*') || d.vdirs.includes(v))
      const state = !h ? 'n/a' : h.state === 'down' ? 'down' : isDrained ? 'drained' : 'up'
      const cell = el('td', state, { class: state, 'data-server': server, 'data-vdir': v, title: h ? h.reason + ' since ' + h.since : '' })
      if (h && h.state === 'down') cell.append(el('div', h.reason + ' — since ' + new Date(h.since).toLocaleString(), { class: 'note' }))
      row.append(cell)
    }
    const cell = el('td')
    const label = 'Drain ' + server
    const select = el('select', undefined, { 'aria-label': 'vdir to drain on ' + server }); select.append(el('option', 'all vdirs', { value: '' })); for (const v of vdirs) select.append(el('option', v, { value: v }))
    const minutes = el('input', undefined, { type: 'number', min: '0', value: '60', 'aria-label': 'deadline in minutes for ' + server, size: '4' })
    const drain = el('button', 'Drain', { type: 'button', 'aria-label': label })
    drain.addEventListener('click', () => act('/backends/' + encodeURIComponent(server) + '/drain', { ...(select.value ? { vdir: select.value } : {}), deadlineMs: Number(minutes.value) * 60000 }, server + ' drained'))
    const enable = el('button', 'Enable', { type: 'button', 'aria-label': 'Enable ' + server })
    enable.addEventListener('click', () => act('/backends/' + encodeURIComponent(server) + '/enable', select.value ? { vdir: select.value } : {}, server + ' enabled'))
    cell.append(select, ' ', minutes, ' min ', drain, ' ', enable)
    if (d) cell.append(el('div', 'drained: ' + d.vdirs.join(', ') + (d.deadline ? ', cut at ' + new Date(d.deadline).toLocaleString() : ''), { class: 'note' }))
    row.append(cell); grid.append(row)
  }
  keepFocus(() => $('grid').replaceChildren(grid))
  $('affinity').replaceChildren(table(['vdir', 'policy', 'requests', 'keys', 'busiest share', 'note'], affinity.vdirs.map((v) => [(v.host ? v.host + ' ' : '') + v.vdir, v.policy, v.requests, v.keysHeld, Math.round(v.busiestShare * 100) + '%', v.imbalance || ''])))
  const certs = status.certificates
  $('certificates').replaceChildren(el('p', 'Last compared ' + (certs.checkedAt ? new Date(certs.checkedAt).toLocaleString() : 'never') + '.'), table(['finding', 'where', 'fix'], [...certs.errors.map((e) => ['error: ' + e.message, e.path, e.fix || '']), ...certs.warnings.map((w) => ['warning: ' + w.message, w.path, w.fix || ''])]))
  $('rules').replaceChildren(el('p', 'Pack ' + status.rules.pack + (status.rules.disabled.length ? '; switched off: ' + status.rules.disabled.join(', ') : '')), table(['rule', 'blocked'], Object.entries(status.rules.blocked)))
  $('errors').replaceChildren(table(['when', 'error', 'server', 'vdir'], status.recentErrors.map((e) => [new Date(e.at).toLocaleString(), e.code, e.server, e.vdir])))
  $('updated').textContent = 'Updated ' + new Date().toLocaleTimeString() + '.'
}
function keepFocus (redraw) {
  const a = document.activeElement; const key = a && a.getAttribute('aria-label'); redraw()
  if (key) { const again = document.querySelector('[aria-label="' + CSS.escape(key) + '"]'); if (again) again.focus() }
}
async function act (path, body, done) {
  try { await call(path, body); say(done); await refresh() } catch (err) { say('Failed: ' + err.message) }
}
async function refresh () {
  try { const [status, affinity] = await Promise.all([call('/status'), call('/affinity')]); $('signin').hidden = true; $('dashboard').hidden = false; render(status, affinity) } catch (err) { if (err.message !== 'signed out') say('Cannot read the status: ' + err.message) }
}
$('signin').addEventListener('submit', async (event) => {
  event.preventDefault()
  try { await call('/session', { token: $('token').value }); $('token').value = ''; $('signin-error').textContent = ''; await refresh(); $('dashboard').focus() } catch (err) { $('signin-error').textContent = 'Sign-in refused: ' + err.message }
})
$('signout').addEventListener('click', async () => { await fetch('/session/end', { method: 'POST', headers: json, body: '{}' }); signedOut() })
refresh(); setInterval(refresh, 5000)
`

/** statusPage renders the page with a fresh nonce, and the CSP that allows only that. */
export function statusPage (): { html: string, csp: string } {
  const nonce = randomBytes(16).toString('base64')
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>casgate status</title><style nonce="${nonce}">${STYLE}</style></head>
<body>
<h1>casgate status</h1>
<form id="signin" hidden>
  <label for="token">Admin token</label>
  <input id="token" name="token" type="password" autocomplete="off" required>
  <button type="submit">Sign in</button>
  <p id="signin-error" class="error" role="alert"></p>
</form>
<main id="dashboard" tabindex="-1" hidden>
  <p><span id="updated"></span> <button type="button" id="signout">Sign out</button></p>
  <p id="said" role="status" aria-live="polite"></p>
  <h2>Health and maintenance</h2><div id="grid"></div>
  <h2>Affinity</h2><div id="affinity"></div>
  <h2>Certificates and Extended Protection</h2><div id="certificates"></div>
  <h2>Exploit rules</h2><div id="rules"></div>
  <h2>Last upstream errors</h2><div id="errors"></div>
</main>
<script nonce="${nonce}">${SCRIPT}</script>
</body></html>`
  const csp = `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'`
  return { html, csp }
}
