// permessage-deflate as the compressing peers use it (ws-deflate.js and
// socketio-deflate.js hand it to ws), set up like wavecast's --compression:
// no context takeover either way (no zlib state kept per connection between
// messages), zlib level 1, messages under 1 KiB sent uncompressed. One
// definition, so the peers stay set up alike.
module.exports = {
  serverNoContextTakeover: true,
  clientNoContextTakeover: true,
  zlibDeflateOptions: { level: 1 },
  threshold: 1024,
};
