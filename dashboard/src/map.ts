// Position widget: OpenStreetMap tiles around the node when the tile server answers, a plain coordinate view
// when it does not (offline, blocked, or no tile URL configured). No API key, no map library.
import { h, setText } from './dom.ts';
import type { Position } from './values.ts';

const ZOOM = 15;
const TILE = 256;
/** After a tile fails, tiles are not tried again for this long (offline sites stay quiet). */
export const TILE_RETRY_MS = 5 * 60_000;

let tileUrl = '';
let tilesFailedAt = 0;

export function configureTiles(url: string): void {
  tileUrl = url;
}

function tilesUsable(): boolean {
  return tileUrl !== '' && Date.now() - tilesFailedAt > TILE_RETRY_MS;
}

export class MapView {
  readonly el: HTMLElement;
  private readonly tiles: HTMLElement;
  private readonly coords: HTMLElement;
  private readonly link: HTMLAnchorElement;
  private key = '';

  constructor() {
    this.tiles = h('div', { class: 'map-tiles' });
    this.coords = h('div', { class: 'map-coords' });
    this.link = h('a', { class: 'map-link', target: '_blank', rel: 'noopener noreferrer' }, 'OpenStreetMap ↗');
    this.el = h(
      'div',
      { class: 'map' },
      this.tiles,
      h('div', { class: 'map-pin', 'aria-hidden': 'true' }),
      this.coords,
      h('div', { class: 'map-attrib' }, '© OpenStreetMap contributors'),
      this.link,
    );
  }

  show(pos: Position): void {
    setText(this.coords, `${pos.lat.toFixed(5)}°, ${pos.lng.toFixed(5)}°`);
    this.link.href = `https://www.openstreetmap.org/?mlat=${pos.lat}&mlon=${pos.lng}#map=${ZOOM}/${pos.lat}/${pos.lng}`;
    if (!tilesUsable()) {
      this.el.classList.add('offline');
      this.tiles.replaceChildren();
      this.key = '';
      return;
    }
    this.el.classList.remove('offline');
    // Web Mercator (the slippy-map convention): world pixel coordinates at zoom ZOOM.
    const scale = TILE * 2 ** ZOOM;
    const px = ((pos.lng + 180) / 360) * scale;
    const lat = (pos.lat * Math.PI) / 180;
    const py = ((1 - Math.log(Math.tan(lat) + 1 / Math.cos(lat)) / Math.PI) / 2) * scale;
    const tx = Math.floor(px / TILE);
    const ty = Math.floor(py / TILE);
    const key = `${tx}/${ty}`;
    // The layer's corner sits at the map's centre (CSS); shifting it back by the node's offset inside the 3×3
    // grid puts the node under the pin. Set through the CSSOM, which style-src 'self' allows (style attributes
    // it would not).
    this.tiles.style.transform = `translate(${-(px - (tx - 1) * TILE)}px, ${-(py - (ty - 1) * TILE)}px)`;
    if (key === this.key) return;
    this.key = key;
    const imgs: HTMLImageElement[] = [];
    const max = 2 ** ZOOM;
    for (let dy = -1; dy <= 1; dy++) {
      for (let dx = -1; dx <= 1; dx++) {
        const x = (((tx + dx) % max) + max) % max;
        const y = ty + dy;
        if (y < 0 || y >= max) continue;
        const img = h('img', { alt: '', draggable: 'false', decoding: 'async', loading: 'lazy' });
        img.style.left = `${(dx + 1) * TILE}px`;
        img.style.top = `${(dy + 1) * TILE}px`;
        img.addEventListener('error', this.onTileError, { once: true });
        img.src = tileUrl
          .replace('{z}', String(ZOOM))
          .replace('{x}', String(x))
          .replace('{y}', String(y))
          .replace('{s}', 'a');
        imgs.push(img);
      }
    }
    this.tiles.replaceChildren(...imgs);
  }

  private readonly onTileError = () => {
    tilesFailedAt = Date.now();
    this.el.classList.add('offline');
    this.tiles.replaceChildren();
    this.key = '';
  };
}
