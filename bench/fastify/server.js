'use strict'

// Fastify peer for bench/http.py: the same two endpoints as bench/uvicorn_app.py.
//
//   GET  /api/status -> 200 {"status":"ok"}
//   POST /api/echo   -> 200 with the JSON body it was sent, parsed and serialized again
//
// One process, no cluster, no logger. Run (after `npm ci` in this folder):
//
//   node server.js --host 127.0.0.1 --port 8003
//
// HOST and PORT in the environment are used when the flags are absent.

const fastify = require('fastify')

function option (name, fallback) {
  const at = process.argv.indexOf('--' + name)
  if (at !== -1 && at + 1 < process.argv.length) return process.argv[at + 1]
  return fallback
}

const host = option('host', process.env.HOST || '127.0.0.1')
const port = Number(option('port', process.env.PORT || '8003'))
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`invalid port: ${port}`)
  process.exit(2)
}

const app = fastify({ logger: false })

// A response schema is how Fastify is meant to be run for speed: it compiles a
// serializer for the object instead of calling JSON.stringify.
app.get('/api/status', {
  schema: {
    response: {
      200: {
        type: 'object',
        properties: { status: { type: 'string' } },
        required: ['status']
      }
    }
  }
}, async () => ({ status: 'ok' }))

// Any JSON object may come in, so there is no schema to compile: Fastify's own
// body parser decodes it and JSON.stringify encodes it back.
app.post('/api/echo', async (request) => request.body)

let closing = false
function shutdown () {
  if (closing) return
  closing = true
  app.close().then(() => process.exit(0), () => process.exit(1))
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)

app.listen({ host, port }).catch((err) => {
  console.error(err)
  process.exit(1)
})
