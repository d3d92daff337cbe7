'use strict'

// Node.js peer for bench/websocket.py: a WebSocket echo server on the `ws` package.
//
// Every message goes back as it came, text as text and binary as binary, on any path.
// One process, no cluster; permessage-deflate stays off (the ws server's default, and the
// load generator does not offer it). Run (after `npm ci` in this folder):
//
//   node server.js --host 127.0.0.1 --port 8020
//
// HOST and PORT in the environment are used when the flags are absent.

const { WebSocketServer } = require('ws')

function option (name, fallback) {
  const at = process.argv.indexOf('--' + name)
  if (at !== -1 && at + 1 < process.argv.length) return process.argv[at + 1]
  return fallback
}

const host = option('host', process.env.HOST || '127.0.0.1')
const port = Number(option('port', process.env.PORT || '8020'))
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`invalid port: ${port}`)
  process.exit(2)
}

const wss = new WebSocketServer({ host, port, perMessageDeflate: false })

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary })
  })
  ws.on('error', () => {}) // a client that vanishes must not take the server down
})

wss.on('error', (err) => {
  console.error(err)
  process.exit(1)
})

let closing = false
function shutdown () {
  if (closing) return
  closing = true
  for (const client of wss.clients) client.terminate()
  wss.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2000).unref()
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
