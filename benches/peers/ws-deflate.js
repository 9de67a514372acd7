// ws-broadcast (../shared/peers/node) with permessage-deflate on, set up
// like wavecast's --compression (deflate-options.js). A client that does not offer the extension gets
// every message uncompressed. ws compresses each send on its own: a
// broadcast to N clients that negotiated it is N compressions. Started by
// benches/compression.sh with ws from the peers' install.
const { WebSocketServer, WebSocket } = require('ws');
const perMessageDeflate = require('./deflate-options');

const port = Number(process.argv[2] || process.env.PORT || 9001);
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate,
});

wss.on('connection', (socket) => {
  socket.on('message', (data, isBinary) => {
    if (isBinary) return;
    const text = data.toString();
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(text);
    }
  });
});
wss.on('listening', () => console.log(`ws-deflate listening on ws://127.0.0.1:${port}/`));
