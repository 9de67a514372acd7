// socketio-broadcast (../shared/peers/node) with permessage-deflate on,
// set up like wavecast's --compression (deflate-options.js; Socket.IO hands
// it to ws). io.emit encodes the packet once; ws then compresses it once per
// socket that negotiated the extension. Started by benches/compression.sh.
const { createServer } = require('http');
const { Server } = require('socket.io');
const perMessageDeflate = require('./deflate-options');

const port = Number(process.argv[2] || process.env.PORT || 9002);
const http = createServer();
const io = new Server(http, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate,
});

io.on('connection', (socket) => {
  socket.on('publish', (payload) => io.emit('msg', payload));
});
http.listen(port, '127.0.0.1', () => console.log(`socketio-deflate listening on ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`));
