// Runs the HTTP cache test suite (suite/, vendored from https://github.com/http-tests/cache-tests)
// against dime-edge with its default settings, in one process: the suite's origin server on a
// loopback port, the edge in quick mode in front of it, the suite's client through the edge.
//
//   node run.mjs --edge target/debug/dime-edge [--docs docs/conformance.md --commit REV]
//
// Exits 1 when a required test fails that expected.json does not list, or one it lists passes
// (then the list is out of date). With --docs, writes the page of figures beside the results the
// suite publishes for other caches.

import { spawn } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import handleConfig from './suite/test-engine/server/handle-config.mjs'
import handleState from './suite/test-engine/server/handle-state.mjs'
import handleTest from './suite/test-engine/server/handle-test.mjs'
import { runTests, getResults } from './suite/test-engine/client/runner.mjs'
import { determineTestResult, resultTypes } from './suite/test-engine/lib/results.mjs'
import suites from './suite/tests/index.mjs'
import published from './suite/results/index.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const SUITE_COMMIT = 'b55b8bd'
const edgeLog = path.join(process.env.TMPDIR || '/tmp', `cache-tests-edge-${process.pid}.log`)

function args () {
  const out = {}
  const argv = process.argv.slice(2)
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]]
    if (!['--edge', '--docs', '--commit'].includes(flag) || value === undefined) {
      throw new Error(`usage: node run.mjs --edge BIN [--docs FILE --commit REV] (got ${flag})`)
    }
    out[flag.slice(2)] = value
  }
  if (!out.edge) throw new Error('--edge BIN is required')
  if (out.docs && !out.commit) throw new Error('--docs needs --commit REV')
  return out
}

/** The suite's origin: /config, /test and /state, as its own server.mjs routes them. */
function startOrigin () {
  const server = http.createServer((request, response) => {
    const segments = new URL(request.url, 'http://origin/').pathname.split('/').slice(1)
    const dispatch = segments.shift()
    const handlers = { config: handleConfig, test: handleTest, state: handleState }
    if (handlers[dispatch]) {
      handlers[dispatch](segments, request, response)
    } else {
      response.writeHead(404).end()
    }
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
}

function freePort () {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

/** dime-edge in quick mode in front of `origin`, once its admin listener says it is ready. */
async function startEdge (bin, origin) {
  const [listen, admin] = [await freePort(), await freePort()]
  const log = fs.openSync(edgeLog, 'w')
  const edge = spawn(bin, ['proxy', '--listen', `127.0.0.1:${listen}`,
    '--to', `127.0.0.1:${origin}`, '--admin', `127.0.0.1:${admin}`],
  { stdio: ['ignore', log, log] })
  const deadline = Date.now() + 30000
  for (;;) {
    if (edge.exitCode !== null) throw new Error(`${bin} exited with ${edge.exitCode}`)
    const ready = await fetch(`http://127.0.0.1:${admin}/readyz`).then(r => r.ok, () => false)
    if (ready) return { edge, base: `http://127.0.0.1:${listen}` }
    if (Date.now() > deadline) throw new Error(`${bin} not ready after 30 s`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

const kinds = {}
for (const suite of suites) {
  for (const test of suite.tests) kinds[test.id] = test.kind || 'required'
}

/** Per kind: how many tests passed, as the suite's own summary counts them. */
function tally (results) {
  const out = { required: [0, 0], optimal: [0, 0], check: [0, 0] }
  for (const [id, kind] of Object.entries(kinds)) {
    const r = determineTestResult(suites, id, results, false)
    if (r === resultTypes.untested) continue
    out[kind][1] += 1
    if (r === resultTypes.pass || r === resultTypes.yes) out[kind][0] += 1
  }
  return out
}

function page (commit, results, expected) {
  const others = published.filter(p => p.type === 'rev-proxy' && fs.existsSync(path.join(here, 'suite/results', p.file)))
  const columns = [{ name: 'dime-edge', results }].concat(others.map(p => ({
    name: `${p.name} ${p.version}`,
    results: JSON.parse(fs.readFileSync(path.join(here, 'suite/results', p.file)))
  })))
  const tallies = columns.map(c => tally(c.results))
  const row = (label, kind) => `| ${label} | ${tallies.map(t => `${t[kind][0]} / ${t[kind][1]}`).join(' | ')} |`
  const failing = Object.keys(results).filter(id => kinds[id] === 'required' &&
    determineTestResult(suites, id, results, false) !== resultTypes.pass)
  return `# HTTP caching conformance: figures

Written by \`make conformance\` on commit ${commit}: the [HTTP cache test suite](https://cache-tests.fyi)
(commit ${SUITE_COMMIT}, in \`proxy/tests/cache-tests/suite/\`) run against \`dime-edge proxy\`, the edge with
its default settings. The other columns are the results the suite publishes for those caches (run
by the suite's authors, not here), for comparison. A cell is tests passed / tests run; a test the
suite only runs in browsers is left out.

| Tests | ${columns.map(c => c.name).join(' | ')} |
| --- | ${columns.map(() => '---').join(' | ')} |
${row('Required (RFC 9111 MUST and SHOULD)', 'required')}
${row('Optimal (what a good cache does)', 'optimal')}
${row('Checks (behaviour the RFC leaves open: "does the cache...?")', 'check')}

## Required tests dime-edge does not pass

${failing.map(id => `- \`${id}\`: ${expected[id] || 'not expected (a regression)'}`).join('\n')}

What the edge does, rule by rule, is in [caching.md](caching.md#rfc-9111-conformance).
\`make test\` runs the suite and fails on any other required test.
`
}

async function main () {
  const opts = args()
  const expected = JSON.parse(fs.readFileSync(path.join(here, 'expected.json'), 'utf8'))
  const origin = await startOrigin()
  const { edge, base } = await startEdge(opts.edge, origin.address().port)
  try {
    await runTests(suites, false, base)
  } finally {
    edge.kill('SIGTERM')
    origin.close()
  }
  const results = getResults()
  const problems = []
  for (const [id, kind] of Object.entries(kinds)) {
    if (kind !== 'required' || results[id] === undefined) continue
    const passed = determineTestResult(suites, id, results, false) === resultTypes.pass
    if (!passed && !expected[id]) problems.push(`${id} fails: ${JSON.stringify(results[id])}`)
    if (passed && expected[id]) problems.push(`${id} passes now: remove it from expected.json`)
  }
  for (const id of Object.keys(expected)) {
    if (kinds[id] === undefined) problems.push(`expected.json names ${id}, which the suite does not have`)
  }
  const t = tally(results)
  for (const kind of Object.keys(t)) console.log(`${kind}: ${t[kind][0]} of ${t[kind][1]} passed`)
  if (opts.docs) {
    fs.writeFileSync(opts.docs, page(opts.commit, results, expected))
    console.log(`wrote ${opts.docs}`)
  }
  if (problems.length > 0) {
    console.error(`HTTP cache test suite: ${problems.length} unexpected result(s) (the edge's log: ${edgeLog})\n  ${problems.join('\n  ')}`)
    process.exit(1)
  }
  console.log('HTTP cache test suite: every required test passes, but those expected.json lists')
  process.exit(0)
}

main().catch(err => {
  console.error(err)
  process.exit(1)
})
