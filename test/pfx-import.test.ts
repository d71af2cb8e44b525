import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { createLabPki, toPfx, type LabPki } from '../src/certificates/lab-ca.js'
import { loadPfx } from '../src/certificates/pfx.js'
import { loadCertificate } from '../src/certificates/load-certificate.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

let pki: LabPki
beforeAll(async () => { pki = await createLabPki(['mail.contoso.test']) })

function fingerprint (pem: string): string {
  return new X509Certificate(pem).fingerprint256
}

describe('PFX import', () => {
  it('finds the leaf by its key and orders the chain, whatever the bag order', () => {
    // Bags in the "wrong" order: root, leaf, intermediate.
    const pfx = toPfx(pki.server, [pki.root, pki.intermediate], 's3cret')
    const loaded = loadPfx(pfx, 's3cret')
    expect(loaded.leaf.fingerprint256).toBe(fingerprint(pki.server.certPem))
    expect(loaded.chain.map((c) => c.fingerprint256)).toEqual([fingerprint(pki.intermediate.certPem)])
    expect(loaded.extra.map((c) => c.fingerprint256)).toEqual([fingerprint(pki.root.certPem)])
    // The served chain is leaf then intermediate, byte for byte what was issued.
    expect(loaded.certPem).toBe(new X509Certificate(pki.server.certPem).toString() + new X509Certificate(pki.intermediate.certPem).toString())
  })

  it('reads legacy 3DES bundles that OpenSSL 3 refuses natively', () => {
    const loaded = loadPfx(toPfx(pki.server, [pki.intermediate], 'legacy', { legacy: true }), 'legacy')
    expect(loaded.leaf.fingerprint256).toBe(fingerprint(pki.server.certPem))
  })

  it('reads a bundle exported by the openssl binary', () => {
    process.env.CASGATE_TEST_PFX_PASS = 'fromopenssl'
    const dir = tempDir()
    const files = writeFiles(dir, { 'leaf.pem': pki.server.certPem, 'key.pem': pki.server.keyPem, 'chain.pem': pki.intermediate.certPem })
    const out = join(dir, 'bundle.pfx')
    execFileSync('openssl', ['pkcs12', '-export', '-in', files['leaf.pem'], '-inkey', files['key.pem'], '-certfile', files['chain.pem'], '-passout', 'pass:fromopenssl', '-out', out])
    const loaded = loadCertificate({ pfx: out, passphraseEnv: 'CASGATE_TEST_PFX_PASS' }, dir)
    expect(loaded.chain).toHaveLength(1)
  }, 20_000)

  it('says the passphrase is wrong instead of failing obscurely', () => {
    const pfx = toPfx(pki.server, [pki.intermediate], 'right')
    expect(() => loadPfx(pfx, 'wrong')).toThrow(/wrong passphrase/)
  })
})
