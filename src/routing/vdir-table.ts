import type { ResolvedVdir } from '../config/vdir-tables.js'

/**
 * VdirTable finds the published virtual directory of a request path. Exchange treats paths
 * case-insensitively (IIS does), so /OWA, /owa and /Owa are one vdir. Only the first segment
 * of the decoded path is looked at: one lowercase and one Map lookup per request.
 */
export class VdirTable<V extends ResolvedVdir = ResolvedVdir> {
  readonly #byKey = new Map<string, V>()

  constructor (vdirs: Iterable<V>) {
    for (const vdir of vdirs) this.#byKey.set(vdir.path.toLowerCase(), vdir)
  }

  /**
   * matchPath returns the vdir of a decoded path (routing/request-target.ts): only '/' ends the
   * first segment there, since a decoded '?' or '#' is part of a name to IIS.
   */
  matchPath (path: string): V | undefined {
    const end = path.indexOf('/', 1)
    return this.#byKey.get((end === -1 ? path : path.slice(0, end)).toLowerCase())
  }

  values (): IterableIterator<V> {
    return this.#byKey.values()
  }
}
