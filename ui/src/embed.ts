// Embed page: GET /embed/<stream> — the player alone, filling the frame.
import './style.css';
import { mountPlayer, playerOptionsFromQuery, streamFromLocation } from './player';
import { exposeForTests } from './globals';

const stream = streamFromLocation();
document.title = stream || 'OnAir';
document.body.dataset.state = 'loading';

const view = mountPlayer(document.getElementById('player') as HTMLElement, {
  stream,
  ...playerOptionsFromQuery(), // ?transport=hls|webrtc, ?ice-timeout=<ms>
  onStateChange: (state) => {
    document.body.dataset.state = state;
  },
  onTransportChange: (t) => {
    document.body.dataset.transport = t;
  },
});

exposeForTests(view, stream);
