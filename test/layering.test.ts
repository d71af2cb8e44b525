import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { describe, expect, it } from 'vitest'

// The code reads in one direction: no folder of src/ imports (even for types) a folder that
// imports it back, directly or around a circle. A circle means two concepts were not really apart.

const SRC = join(import.meta.dirname, '..', 'src')

/** folderGraph maps each folder of src/ to the folders its files import. */
function folderGraph (): Map<string, Map<string, string>> {
  const graph = new Map<string, Map<string, string>>()
  const files = readdirSync(SRC, { recursive: true, encoding: 'utf8' }).filter((file) => file.endsWith('.ts'))
  for (const file of files) {
    const from = dirname(file)
    const edges = graph.get(from) ?? new Map<string, string>()
    graph.set(from, edges)
    const source = readFileSync(join(SRC, file), 'utf8')
    for (const match of source.matchAll(/(?:from\s+|import\s*\(\s*)['"](\.{1,2}\/[^'"]+)['"]/g)) {
      const target = relative(SRC, normalize(join(SRC, from, match[1]!)))
      const to = dirname(target)
      if (to !== from && !edges.has(to)) edges.set(to, `${file} imports ${target}`)
    }
  }
  return graph
}

/** cycles finds the strongly connected groups of more than one folder (Tarjan). */
function cycles (graph: Map<string, Map<string, string>>): string[][] {
  let index = 0
  const indices = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const found: string[][] = []
  const visit = (node: string): void => {
    indices.set(node, index)
    low.set(node, index++)
    stack.push(node)
    onStack.add(node)
    for (const next of graph.get(node)?.keys() ?? []) {
      if (!indices.has(next)) {
        visit(next)
        low.set(node, Math.min(low.get(node)!, low.get(next)!))
      } else if (onStack.has(next)) {
        low.set(node, Math.min(low.get(node)!, indices.get(next)!))
      }
    }
    if (low.get(node) !== indices.get(node)) return
    const group: string[] = []
    let member: string
    do {
      member = stack.pop()!
      onStack.delete(member)
      group.push(member)
    } while (member !== node)
    if (group.length > 1) found.push(group)
  }
  for (const node of graph.keys()) if (!indices.has(node)) visit(node)
  return found
}

describe('layering of src/', () => {
  it('has no import cycle between folders', () => {
    const graph = folderGraph()
    const explained = cycles(graph).map((group) => group.flatMap((from) => [...(graph.get(from) ?? [])]
      .filter(([to]) => group.includes(to))
      .map(([to, why]) => `${from || '.'} -> ${to || '.'}: ${why}`)))
    expect(explained).toEqual([])
  })

  it('keeps the composition root on top: no folder imports src/*.ts', () => {
    const graph = folderGraph()
    const intoRoot = [...graph].flatMap(([from, edges]) => from === '.' ? [] : [...edges].filter(([to]) => to === '.').map(([, why]) => why))
    expect(intoRoot).toEqual([])
  })

  it('detects a cycle when there is one', () => {
    const graph = new Map([['a', new Map([['b', 'a/x imports b/y']])], ['b', new Map([['a', 'b/y imports a/x']])], ['c', new Map([['a', '']])]])
    expect(cycles(graph)).toEqual([['b', 'a']])
  })

  it('loads the Redis client only where the configuration asks for it (2 MB of heap an instance alone does not need)', () => {
    const dist = join(import.meta.dirname, '..', 'dist', 'src')
    expect(existsSync(join(dist, 'cli.js')), 'run npm run build first').toBe(true)
    const script = `
      import { createRequire } from 'node:module'
      await import(${JSON.stringify(join(dist, 'cli.js'))})
      const loaded = Object.keys(createRequire(import.meta.url).cache)
      console.log(JSON.stringify(loaded.filter((path) => path.includes('/node_modules/ioredis/'))))`
    expect(JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }))).toEqual([])
  })
})
