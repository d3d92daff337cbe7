'use strict'
// Round trips per second over one packet-stream connection.
//   node bench_client.js PORT INFLIGHT SECONDS [WARMUP_SECONDS]
// keeps INFLIGHT requests outstanding ({op, n, data} objects, answered by ps_server.js),
// first for WARMUP_SECONDS unmeasured, then for SECONDS; prints {"requests": N, "seconds": S}.
const net = require('net')
const PacketStream = require('packet-stream')
const { attach } = require('./lib')

const [port, inflight, seconds, warmup] = process.argv.slice(2).map(Number)
const socket = net.connect(port, '127.0.0.1')
const ps = PacketStream({})
const payload = { op: 'echo', n: 0, data: 'x'.repeat(32) }

function phase (secs, done) {
  let count = 0
  let active = 0
  let stopping = false
  const start = process.hrtime.bigint()
  const deadline = start + BigInt(Math.round(secs * 1e9))
  function one () {
    active++
    ps.request(payload, (err) => {
      active--
      if (err) throw new Error(JSON.stringify(err))
      count++
      if (!stopping && process.hrtime.bigint() >= deadline) stopping = true
      if (!stopping) one()
      else if (active === 0) done(count, Number(process.hrtime.bigint() - start) / 1e9)
    })
  }
  for (let i = 0; i < inflight; i++) one()
}

socket.on('connect', () => {
  attach(socket, ps)
  phase(warmup || 0, () => {
    phase(seconds, (count, secs) => {
      process.stdout.write(JSON.stringify({ requests: count, seconds: secs }) + '\n')
      ps.close(() => {})
    })
  })
})
