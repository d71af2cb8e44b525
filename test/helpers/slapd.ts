import { spawn, execFile } from 'node:child_process'
import { mkdirSync, readFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { onTestFinished } from 'vitest'
import { escapeDnValue } from '../../src/preauth/ldap-provider.js'
import type { LabPki } from '../../src/certificates/lab-ca.js'
import { closedPort } from './ports.js'
import { tempDir, writeFiles } from './tmp.js'

const run = promisify(execFile)
/** SUFFIX is the lab directory's base DN. */
export const LDAP_SUFFIX = 'dc=contoso,dc=test'

/** Slapd is a real OpenLDAP server on loopback, ldap:// and ldaps:// (with the lab PKI). */
export interface Slapd {
  ldapUrl: string
  ldapsUrl: string
  stop: () => Promise<void>
}

async function listening (port: number, deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true) })
      socket.on('error', () => resolve(false))
    })
    if (ok) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error('slapd did not start listening')
}

/**
 * startSlapd runs slapd (installed by .ci/run) with a throwaway mdb database holding
 * uid=<user>,ou=people,dc=contoso,dc=test for each user. Stopped when the test ends.
 */
export async function startSlapd (users: Record<string, string>, pki: LabPki): Promise<Slapd> {
  const dir = tempDir()
  mkdirSync(join(dir, 'db'))
  const files = writeFiles(dir, { 'server.crt': pki.server.certPem + pki.intermediate.certPem, 'server.key': pki.server.keyPem, 'root.pem': pki.root.certPem })
  const people = Object.entries(users).map(([uid, password]) => `dn: uid=${escapeDnValue(uid)},ou=people,${LDAP_SUFFIX}\nobjectClass: inetOrgPerson\nuid: ${uid}\ncn: ${uid}\nsn: ${uid}\nuserPassword: ${password}\n`)
  const written = writeFiles(dir, {
    'slapd.conf': [
      'include /etc/ldap/schema/core.schema',
      'include /etc/ldap/schema/cosine.schema',
      'include /etc/ldap/schema/inetorgperson.schema',
      `pidfile ${join(dir, 'slapd.pid')}`,
      'modulepath /usr/lib/ldap',
      'moduleload back_mdb',
      `TLSCertificateFile ${files['server.crt']}`,
      `TLSCertificateKeyFile ${files['server.key']}`,
      `TLSCACertificateFile ${files['root.pem']}`,
      'database mdb',
      `suffix "${LDAP_SUFFIX}"`,
      `rootdn "cn=admin,${LDAP_SUFFIX}"`,
      'rootpw lab-admin-secret',
      `directory ${join(dir, 'db')}`,
      'maxsize 10485760'
    ].join('\n') + '\n',
    'data.ldif': [`dn: ${LDAP_SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Contoso\ndc: contoso\n`, `dn: ou=people,${LDAP_SUFFIX}\nobjectClass: organizationalUnit\nou: people\n`, ...people].join('\n')
  })
  await run('/usr/sbin/slapadd', ['-f', written['slapd.conf'], '-l', written['data.ldif']])
  const [ldapPort, ldapsPort] = [await closedPort(), await closedPort()]
  const ldapUrl = `ldap://127.0.0.1:${ldapPort}`
  const ldapsUrl = `ldaps://127.0.0.1:${ldapsPort}`
  const child = spawn('/usr/sbin/slapd', ['-f', written['slapd.conf'], '-h', `${ldapUrl}/ ${ldapsUrl}/`, '-d', '0'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    await exited
  }
  onTestFinished(stop)
  try {
    await listening(ldapPort, Date.now() + 10_000)
    await listening(ldapsPort, Date.now() + 5_000)
  } catch (err) {
    await stop()
    throw new Error(`${(err as Error).message}: ${stderr}${readFileSync(written['slapd.conf'], 'utf8')}`)
  }
  return { ldapUrl, ldapsUrl, stop }
}
