'use strict'
// Encodes with the real packet-stream-codec, for byte-for-byte comparison.
// stdin: a JSON array of {req, stream, end, value} (Buffers as {"buffer": hex}, and
// {"goodbye": true} for GOODBYE). stdout: a JSON array of hex strings.
// With argv[2] === 'stringify': stdin is a JSON array of numbers written as strings
// (so Python floats survive), stdout the JSON.stringify text of each.
const codec = require('packet-stream-codec')
const { fromShown } = require('./lib')

let input = ''
process.stdin.on('data', (d) => { input += d })
process.stdin.on('end', () => {
  const items = JSON.parse(input)
  let out
  if (process.argv[2] === 'stringify') {
    out = items.map((s) => JSON.stringify(Number(s)))
  } else {
    out = items.map((m) => {
      const msg = m.goodbye ? 'GOODBYE' : { req: m.req, stream: m.stream, end: m.end, value: fromShown(m.value) }
      const [head, body] = codec.encodePair(msg)
      return head.toString('hex') + (body ? body.toString('hex') : '')
    })
  }
  process.stdout.write(JSON.stringify(out))
})
