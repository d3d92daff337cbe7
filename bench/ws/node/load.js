'use strict'

// WebSocket echo load generator for bench/websocket.py, on the `ws` client.
//
// Opens --connections WebSockets to --url (permessage-deflate not offered), then each
// connection plays ping-pong: it sends one text message of --size bytes, waits for its
// echo, checks it is the same text, and sends the next one. Echoes are counted, and their
// round-trip times recorded, only in the measured window: --warmup seconds after every
// connection is open, for --duration seconds. Then every connection is closed with 1000.
//
// One JSON object goes to stdout (and nothing else): messages per second, round-trip
// percentiles in ms, this process's CPU use over the window (near 1.0 means the load
// generator, not the server, set the pace), and error counts. A run with any error
// (failed connect, wrong echo, binary instead of text, connection closed or failed
// during the run) says so in "errors"; the exit status is 0 whenever the JSON is written.
//
//   node load.js --url ws://127.0.0.1:8020/echo --connections 64 --size 64 \
//                --duration 5 --warmup 1

const { performance } = require('perf_hooks')
const WebSocket = require('ws')

function option (name, fallback) {
  const at = process.argv.indexOf('--' + name)
  if (at !== -1 && at + 1 < process.argv.length) return process.argv[at + 1]
  return fallback
}

const url = option('url', 'ws://127.0.0.1:8020/echo')
const connections = Number(option('connections', '64'))
const size = Number(option('size', '64'))
const durationS = Number(option('duration', '5'))
const warmupS = Number(option('warmup', '1'))
const connectTimeoutS = Number(option('connect-timeout', '10'))
for (const [name, value, min] of [['connections', connections, 1], ['size', size, 16],
  ['duration', durationS, 0.1], ['warmup', warmupS, 0],
  ['connect-timeout', connectTimeoutS, 0.1]]) {
  if (!Number.isFinite(value) || value < min) {
    console.error(`invalid --${name}: ${value}`)
    process.exit(2)
  }
}

const errors = { connect: 0, mismatch: 0, binary: 0, closed_early: 0, error_events: 0 }
const samples = [] // the first few error messages, for the report
function noteError (kind, detail) {
  errors[kind] += 1
  if (samples.length < 5) samples.push(`${kind}: ${detail}`)
}

// Round-trip times in ms of the echoes received in the measured window.
let latencies = new Float64Array(1 << 18)
let measured = 0
let totalEchoes = 0
let recording = false
let stopping = false

function record (ms) {
  if (measured === latencies.length) {
    const bigger = new Float64Array(latencies.length * 2)
    bigger.set(latencies)
    latencies = bigger
  }
  latencies[measured++] = ms
}

// Each connection's payload: ASCII text of exactly `size` bytes naming the connection,
// so an echo that went to the wrong connection is caught too.
function payloadFor (index) {
  const head = `packetron-bench c${index} `
  return Buffer.from(head.padEnd(size, 'x').slice(0, size), 'latin1')
}

function openOne (index) {
  return new Promise((resolve) => {
    const payload = payloadFor(index)
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 1 << 20 })
    let sentAt = 0
    let open = false
    const timer = setTimeout(() => {
      if (!open) {
        noteError('connect', `no open after ${connectTimeoutS} s`)
        ws.terminate()
        resolve(null)
      }
    }, connectTimeoutS * 1000)

    function sendNext () {
      sentAt = performance.now()
      ws.send(payload, { binary: false })
    }

    ws.on('open', () => {
      open = true
      clearTimeout(timer)
      resolve({ ws, start: sendNext })
    })
    ws.on('message', (data, isBinary) => {
      const now = performance.now()
      if (isBinary) {
        noteError('binary', `connection ${index} got a binary echo`)
      } else if (!payload.equals(data)) {
        noteError('mismatch', `connection ${index} got ${JSON.stringify(String(data).slice(0, 80))}`)
      }
      totalEchoes += 1
      if (recording) record(now - sentAt)
      if (!stopping) sendNext()
    })
    ws.on('unexpected-response', (req, res) => {
      clearTimeout(timer)
      noteError('connect', `HTTP ${res.statusCode} instead of 101`)
      ws.terminate()
      resolve(null)
    })
    ws.on('error', (err) => {
      if (!open) {
        clearTimeout(timer)
        noteError('connect', err.message)
        resolve(null)
      } else if (!stopping) {
        noteError('error_events', `connection ${index}: ${err.message}`)
      }
    })
    ws.on('close', (code) => {
      if (open && !stopping) noteError('closed_early', `connection ${index} closed with ${code}`)
    })
  })
}

function percentile (sorted, count, fraction) {
  if (count === 0) return null
  const rank = Math.min(count - 1, Math.max(0, Math.ceil(fraction * count) - 1))
  return sorted[rank]
}

function closeAll (opened) {
  return new Promise((resolve) => {
    let pending = opened.length
    if (pending === 0) return resolve()
    const timer = setTimeout(() => {
      for (const { ws } of opened) ws.terminate()
      resolve()
    }, 3000)
    for (const { ws } of opened) {
      if (ws.readyState === WebSocket.CLOSED) {
        if (--pending === 0) { clearTimeout(timer); resolve() }
        continue
      }
      ws.once('close', () => {
        if (--pending === 0) { clearTimeout(timer); resolve() }
      })
      ws.close(1000)
    }
  })
}

async function main () {
  const opened = (await Promise.all(Array.from({ length: connections }, (_, i) => openOne(i))))
    .filter((c) => c !== null)
  for (const c of opened) c.start()
  await new Promise((resolve) => setTimeout(resolve, warmupS * 1000))

  const countAtStart = totalEchoes
  const cpuAtStart = process.cpuUsage()
  const startedAt = performance.now()
  recording = true
  await new Promise((resolve) => setTimeout(resolve, durationS * 1000))
  recording = false
  const windowMs = performance.now() - startedAt
  const cpu = process.cpuUsage(cpuAtStart)
  stopping = true
  const echoesInWindow = totalEchoes - countAtStart

  await closeAll(opened)

  const sorted = latencies.subarray(0, measured).sort()
  let sum = 0
  for (let i = 0; i < measured; i++) sum += sorted[i]
  const result = {
    url,
    connections,
    connected: opened.length,
    size,
    window_s: windowMs / 1000,
    messages: measured,
    messages_per_s: measured / (windowMs / 1000),
    echoes_total: totalEchoes,
    echoes_in_window: echoesInWindow,
    latency_ms: {
      mean: measured ? sum / measured : null,
      p50: percentile(sorted, measured, 0.50),
      p90: percentile(sorted, measured, 0.90),
      p99: percentile(sorted, measured, 0.99),
      p999: percentile(sorted, measured, 0.999),
      max: measured ? sorted[measured - 1] : null
    },
    client_cpu: (cpu.user + cpu.system) / 1000 / windowMs,
    errors,
    error_samples: samples
  }
  process.stdout.write(JSON.stringify(result) + '\n')
  process.exit(0)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
