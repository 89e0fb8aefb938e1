// Embed page: GET /embed/<stream> — the player alone, filling the frame.
import './style.css';
import { hlsBaseFromPage, mountPlayer, playerOptionsFromQuery, streamFromLocation } from './player';
import { exposeForTests } from './globals';

const stream = streamFromLocation();
document.title = stream || 'OnAir';
document.body.dataset.state = 'loading';

const view = mountPlayer(document.getElementById('player') as HTMLElement, {
  stream,
  hlsOrigin: hlsBaseFromPage(), // hls.public_base_url: a CDN or caching proxy in front of OnAir
  ...playerOptionsFromQuery(), // ?transport=hls|webrtc, ?ice-timeout=<ms>
  onStateChange: (state) => {
    document.body.dataset.state = state;
  },
  onTransportChange: (t) => {
    document.body.dataset.transport = t;
  },
});

exposeForTests(view, stream);
