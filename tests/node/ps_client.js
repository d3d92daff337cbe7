'use strict'
// A packet-stream client that runs one fixed conversation against a server:
//   node ps_client.js PORT        prints one JSON line per result, then {"step":"done"}
const net = require('net')
const PacketStream = require('packet-stream')
const { attach, show, emit } = require('./lib')

const port = Number(process.argv[2])
const socket = net.connect(port, '127.0.0.1')

function flatErr (err) {
  if (!err) return null
  return { message: err.message, name: err.name, stack: err.stack === undefined ? null : err.stack }
}

const received = []
const ps = PacketStream({
  message (value) { received.push(show(value)) },
  close (err) {
    emit({ step: 'closed', err: flatErr(err), messages: received })
    emit({ step: 'done' })
  }
})

function request (value) {
  return new Promise((resolve) => {
    ps.request(value, (err, result) => resolve(err ? { err: flatErr(err) } : { value: show(result) }))
  })
}

function runStream (chunks, endErr) {
  return new Promise((resolve) => {
    const s = ps.stream()
    const got = []
    s.read = (data, end) => {
      if (end) resolve({ chunks: got, end: end === true ? true : flatErr(end) })
      else got.push(show(data))
    }
    for (const c of chunks) s.write(c)
    if (endErr) {
      const e = new Error(endErr)
      e.stack = 'Error: ' + endErr
      s.end(e)
    } else s.end()
  })
}

socket.on('connect', async () => {
  attach(socket, ps)
  ps.message('HELLO')
  ps.message({ hello: 'json', n: 1 })
  emit({ step: 'count', ...(await request('COUNT?')) })
  emit({ step: 'object', ...(await request({ foo: 'bar' })) })
  emit({ step: 'string', ...(await request('ping')) })
  emit({ step: 'buffer', ...(await request(Buffer.from('00ff10', 'hex'))) })
  emit({ step: 'unicode', ...(await request({ s: 'h\u00e9llo \u2603', f: 1.5, i: 3, neg: -2.5e-7 })) })
  emit({ step: 'fail', ...(await request({ fail: true })) })
  const many = await Promise.all([1, 2, 3, 4, 5].map((n) => request({ n })))
  emit({ step: 'parallel', values: many })
  emit({ step: 'stream', ...(await runStream(['chunk-1', { n: 2 }, Buffer.from('chunk-3')])) })
  emit({ step: 'stream_error', ...(await runStream([{ n: 1 }], 'stream broke')) })
  ps.close((err) => emit({ step: 'close_cb', err: flatErr(err) }))
})
socket.on('error', (err) => emit({ step: 'socket_error', message: err.message }))
