// A small SVG line of recent values (a gateway's messages per second). Only numbers the page computed go into
// the drawing, as attribute values of createElementNS elements: no markup is ever built from text.
const SVG_NS = 'http://www.w3.org/2000/svg';
export const SPARK_WIDTH = 120;
export const SPARK_HEIGHT = 28;

export function sparkline(): { el: SVGSVGElement; draw(values: readonly number[]): void } {
  const el = document.createElementNS(SVG_NS, 'svg');
  el.setAttribute('viewBox', `0 0 ${SPARK_WIDTH} ${SPARK_HEIGHT}`);
  el.setAttribute('class', 'spark');
  el.setAttribute('aria-hidden', 'true');
  el.setAttribute('preserveAspectRatio', 'none');
  const line = document.createElementNS(SVG_NS, 'polyline');
  line.setAttribute('class', 'spark-line');
  el.append(line);
  return {
    el,
    draw(values) {
      line.setAttribute('points', sparkPoints(values));
    },
  };
}

/** The polyline's points for `values`, scaled to the box (the highest value touches the top). */
export function sparkPoints(values: readonly number[]): string {
  if (values.length === 0) return '';
  const max = Math.max(1, ...values.filter(Number.isFinite));
  const step = values.length > 1 ? SPARK_WIDTH / (values.length - 1) : 0;
  return values
    .map((v, i) => {
      const y = SPARK_HEIGHT - 1 - ((Number.isFinite(v) ? Math.max(0, v) : 0) / max) * (SPARK_HEIGHT - 2);
      return `${(i * step).toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
}
