'use strict'
// A packet-stream server, the peer of packetron's wire-compatibility tests and benchmark.
//   node ps_server.js [port]      prints "READY <port>", then one JSON line per event
// Requests: 'COUNT?' -> messages seen on this connection; {fail:true} -> an error;
// strings and Buffers -> echoed with their type; anything else -> {okay:true, echo:value}.
// Streams: every chunk and the end (clean or error) are echoed back.
const net = require('net')
const PacketStream = require('packet-stream')
const { attach, show, emit } = require('./lib')

const quiet = process.env.PS_QUIET === '1'

const server = net.createServer((socket) => {
  let count = 0
  const ps = PacketStream({
    message (value) {
      count++
      if (!quiet) emit({ event: 'message', value: show(value) })
    },
    request (value, cb) {
      if (value === 'COUNT?') return cb(null, count)
      if (value && typeof value === 'object' && value.fail === true) {
        const err = new Error('fail requested')
        err.stack = 'Error: fail requested' // reproducible bytes
        return cb(err)
      }
      if (typeof value === 'string' || Buffer.isBuffer(value)) return cb(null, value)
      cb(null, { okay: true, echo: value })
    },
    stream (s) {
      s.read = function (data, end) {
        if (!quiet) emit({ event: 'stream', id: s.id, data: show(data), end: show(end) })
        if (end) s.write(null, end)
        else s.write(data)
      }
    },
    close (err) {
      if (!quiet) emit({ event: 'close', err: err ? { message: err.message, name: err.name } : null })
    }
  })
  attach(socket, ps)
})

server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  process.stdout.write('READY ' + server.address().port + '\n')
})
process.on('SIGTERM', () => process.exit(0))
