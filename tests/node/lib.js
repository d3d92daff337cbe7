'use strict'
// The stack muxrpc 8 builds on one TCP connection (see shared PACKET-STREAM.md §1):
//   packet-stream  <->  weird-to-pull adapter  <->  pull-goodbye  <->  packet-stream-codec  <->  socket
// The adapter is written here because the original lives inside muxrpc. Like it, when
// packet-stream ends its output the adapter also aborts reading the socket, so the side
// that closes sends GOODBYE and then tears the TCP connection down.
const pull = require('pull-stream')
const toPull = require('stream-to-pull-stream')
const goodbye = require('pull-goodbye')
const codec = require('packet-stream-codec')

function weirdToPull (weird, onDone) {
  const outbox = [] // what packet-stream asked to send, not yet pulled by the codec
  let outEnd = null // packet-stream's end of output: true or an error
  let waiting = null // a pending source callback
  let upstream = null // the sink's read function, aborted when we are done
  let finished = false

  function finish (err) {
    if (finished) return
    finished = true
    if (onDone) onDone(err)
    if (upstream) {
      const read = upstream
      upstream = null
      read(err || true, () => {})
    }
  }

  weird.read = function (msg, end) {
    if (end) outEnd = outEnd || end
    else if (!outEnd) outbox.push(msg)
    if (waiting) {
      const cb = waiting
      waiting = null
      source(null, cb)
    }
    if (outEnd) finish(outEnd === true ? null : outEnd)
  }

  function source (abort, cb) {
    if (abort) {
      weird.write(null, abort)
      cb(abort)
      return finish(abort === true ? null : abort)
    }
    if (outbox.length) return cb(null, outbox.shift())
    if (outEnd) return cb(outEnd)
    waiting = cb
  }

  function sink (read) {
    if (outEnd) return read(outEnd, () => {})
    upstream = read
    pull.drain((msg) => {
      if (finished) return false
      weird.write(msg)
    }, (err) => {
      if (!finished) weird.write(null, err || true)
      finish(err)
    })(read)
  }

  return { source, sink }
}

// Runs PacketStream `ps` over a net.Socket.
function attach (socket, ps) {
  socket.setNoDelay(true) // the codec writes header and body separately: avoid Nagle stalls
  const conn = toPull.duplex(socket)
  const wire = codec(goodbye(weirdToPull(ps)))
  pull(conn, wire, conn)
}

// JSON-safe view of a packet-stream value (Buffers tagged, so the type is visible).
function show (v) {
  if (Buffer.isBuffer(v)) return { buffer: v.toString('hex') }
  return v === undefined ? null : v
}

function fromShown (v) {
  if (v && typeof v === 'object' && typeof v.buffer === 'string' && Object.keys(v).length === 1) {
    return Buffer.from(v.buffer, 'hex')
  }
  return v
}

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

module.exports = { weirdToPull, attach, show, fromShown, emit }
