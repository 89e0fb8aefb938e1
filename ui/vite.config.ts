import { defineConfig, type Plugin } from 'vite';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('.', import.meta.url));

// ONAIR_UI_OUT: absolute output directory (the Rust build points it into its
// own out dir); default ui/dist.
const outDir = process.env.ONAIR_UI_OUT || 'dist';

// Dev server only: forward /live and /api to a running OnAir server.
const devServer = process.env.ONAIR_DEV_SERVER || 'http://127.0.0.1:8080';

/** Dev server only: the same page routing as the OnAir server. */
function onairRoutes(): Plugin {
  return {
    name: 'onair-routes',
    configureServer(server) {
      server.middlewares.use((req, _res, next) => {
        const url = req.url ?? '/';
        const path = url.split('?')[0];
        if (/^\/embed\/[^/]+\/?$/.test(path)) req.url = '/embed.html' + url.slice(path.length);
        next();
      });
    },
  };
}

export default defineConfig({
  root,
  base: '/',
  plugins: [onairRoutes()],
  build: {
    outDir,
    emptyOutDir: true,
    assetsDir: 'assets',
    modulePreload: { polyfill: false },
    target: 'es2020',
    rolldownOptions: {
      input: {
        index: fileURLToPath(new URL('index.html', import.meta.url)),
        embed: fileURLToPath(new URL('embed.html', import.meta.url)),
        // The desktop window (src-tauri embeds it).
        app: fileURLToPath(new URL('app.html', import.meta.url)),
      },
      output: {
        // hls.js in its own long-cacheable chunk; the shared player code in another.
        codeSplitting: {
          groups: [
            { name: 'hls', test: /node_modules[\\/]hls\.js/ },
            { name: 'player', test: /src[\\/]/, minShareCount: 2 },
          ],
        },
      },
    },
    // hls.js alone is ~520 kB minified.
    chunkSizeWarningLimit: 700,
  },
  server: {
    proxy: {
      '/live': { target: devServer, changeOrigin: true },
      '/api': { target: devServer, changeOrigin: true },
    },
  },
});
