// Turns raw runs into the markdown table and the Targets section.
import { MiB, sizeLabel, stats } from './util.mjs';

/** 100 MB as in the target (decimal megabytes), in KiB as GNU time reports peak RSS. */
export const RSS_LIMIT_KIB = 100e6 / 1024;

/** Throughput, RSS and CPU summary of one tool in one scenario and size. */
export function summarise(row) {
  const ok = row.runs.filter((r) => r.ok);
  const mibps = stats(ok.map((r) => row.size / MiB / r.wall));
  const rss = ok.map((r) => r.rssKiB).filter((v) => v !== undefined);
  const cpu = stats(ok.map((r) => r.cpu).filter((v) => v !== undefined));
  return {
    mibps,
    wall: stats(ok.map((r) => r.wall)),
    peakRssKiB: rss.length ? Math.max(...rss) : undefined,
    cpuMedian: cpu?.median,
    failed: row.runs.length - ok.length,
    ok: ok.length > 0 && ok.length === row.runs.length && row.verified !== false,
  };
}

const f1 = (v) => (v === undefined ? 'n/a' : v.toFixed(1));
const f2 = (v) => (v === undefined ? 'n/a' : v.toFixed(2));

function refOf(rows, row) {
  return rows.find((r) => r.scenario === row.scenario && r.size === row.size && r.isRef);
}

export function ratioToRef(rows, row) {
  const ref = refOf(rows, row);
  if (!ref) return undefined;
  const a = summarise(row);
  const b = summarise(ref);
  if (!a.ok || !b.ok || !a.mibps || !b.mibps) return undefined;
  return a.mibps.median / b.mibps.median;
}

export const SCENARIO_TITLE = {
  upload: 'upload',
  download: 'download, 1 stream',
  segments: 'download, 4 segments',
};

export function markdownTable(rows) {
  const out = [];
  out.push('| scenario | size | tool | median MiB/s | min–max MiB/s | peak RSS MiB | CPU s (user+sys) | × reference |');
  out.push('|---|---|---|--:|--:|--:|--:|--:|');
  for (const row of rows) {
    const s = summarise(row);
    const ratio = ratioToRef(rows, row);
    const bad = !s.ok ? (row.verified === false ? ' **WRONG OUTPUT**' : ` **FAILED ${s.failed}/${row.runs.length}**`) : '';
    out.push(
      `| ${SCENARIO_TITLE[row.scenario]} | ${sizeLabel(row.size)} | ${row.tool}${row.isRef ? ' (ref)' : ''}${bad} | ` +
        `${s.mibps ? f1(s.mibps.median) : 'n/a'} | ${s.mibps ? `${f1(s.mibps.min)}–${f1(s.mibps.max)}` : 'n/a'} | ` +
        `${s.peakRssKiB !== undefined ? f1(s.peakRssKiB / 1024) : 'n/a'} | ${f2(s.cpuMedian)} | ` +
        `${row.isRef ? '1.00' : ratio !== undefined ? f2(ratio) : 'n/a'} |`,
    );
  }
  return out.join('\n');
}

export function startupTable(startup) {
  const out = ['| command | median ms | min–max ms | × `node -e 0` |', '|---|--:|--:|--:|'];
  const ref = startup.find((s) => s.isRef);
  const refMed = ref ? stats(ref.ms).median : undefined;
  for (const s of startup) {
    const st = stats(s.ms);
    if (!st) continue;
    out.push(`| \`${s.tool}\` | ${f1(st.median)} | ${f1(st.min)}–${f1(st.max)} | ${refMed ? f2(st.median / refMed) : 'n/a'} |`);
  }
  return out.join('\n');
}

const GiB = 1024 * MiB;

/**
 * Issue 13's targets, each met / missed / n/a with the numbers that decided it.
 * `small`: the 1 MiB end-to-end commands and `node -e 0`; `serveRss`: bits serve's VmHWM by size.
 */
export function evaluateTargets(rows, small, sizes, serveRss = {}) {
  const targets = [];
  const byTool = (scenario, tool, size) => rows.find((r) => r.scenario === scenario && r.tool === tool && r.size === size);
  const worst = (a, b) => (a === 'missed' || b === 'missed' ? 'missed' : a === 'n/a' || b === 'n/a' ? 'n/a' : 'met');

  /** bits vs its scenario's reference, per size; `factor(size)` is the ratio the target asks for. */
  const throughput = (name, scenario, bitsTool, factor) => {
    const parts = [];
    let status = 'met';
    for (const size of sizes) {
      const row = byTool(scenario, bitsTool, size);
      const want = factor(size);
      if (!row) {
        status = worst(status, 'n/a');
        parts.push(`${sizeLabel(size)}: not measured`);
        continue;
      }
      const s = summarise(row);
      if (!s.ok) {
        status = 'missed';
        parts.push(`${sizeLabel(size)}: bits ${row.verified === false ? 'produced a wrong file' : 'failed'}`);
        continue;
      }
      const r = ratioToRef(rows, row);
      if (r === undefined) {
        status = worst(status, 'n/a');
        parts.push(`${sizeLabel(size)}: no reference`);
        continue;
      }
      if (r < want) status = 'missed';
      parts.push(`${sizeLabel(size)}: ${r.toFixed(2)}× (wants ≥ ${want.toFixed(1)}×)`);
    }
    targets.push({ name, status, detail: parts.join(', ') });
  };

  throughput('upload ≥ 0.9× curl PUT to nginx (bits serve in its default durability)', 'upload', 'bits upload', () => 0.9);
  throughput('one-stream download ≥ 1.0× curl at 1 GiB and ≥ 0.5× at 100 MiB', 'download', 'bits download', (size) => (size >= GiB ? 1.0 : 0.5));
  throughput('`--segments 4` ≥ 1.0× aria2c -x4 -s4', 'segments', 'bits download --segments 4', () => 1.0);

  {
    const ref = small.find((c) => c.isRef);
    const refMed = ref && ref.ms.length ? stats(ref.ms).median : undefined;
    for (const kind of ['download', 'upload']) {
      const c = small.find((x) => x.kind === kind);
      const name = `a 1 MiB ${kind}, end to end, ≤ 2× \`node -e 0\``;
      if (!c || !c.ms.length || refMed === undefined) {
        targets.push({ name, status: 'n/a', detail: 'not measured' });
        continue;
      }
      const med = stats(c.ms).median;
      const r = med / refMed;
      targets.push({ name, status: r <= 2 ? 'met' : 'missed', detail: `${med.toFixed(0)} ms against ${refMed.toFixed(0)} ms: ${r.toFixed(2)}×` });
    }
  }

  {
    const parts = [];
    let status = 'met';
    let any = false;
    const peaks = [];
    for (const size of sizes) {
      const bitsRows = rows.filter((r) => r.size === size && r.tool.startsWith('bits '));
      const rss = bitsRows.map((r) => ({ tool: r.tool, kib: summarise(r).peakRssKiB })).filter((v) => v.kib !== undefined);
      if (rss.length === 0) {
        parts.push(`${sizeLabel(size)}: not measured`);
        continue;
      }
      any = true;
      const peak = rss.reduce((a, b) => (b.kib > a.kib ? b : a));
      peaks.push(peak.kib);
      if (peak.kib > RSS_LIMIT_KIB) status = 'missed';
      parts.push(`${sizeLabel(size)}: ${(peak.kib / 1024).toFixed(1)} MiB (${((peak.kib * 1024) / 1e6).toFixed(1)} MB, ${peak.tool})`);
    }
    // Flat: the largest size may not need more than the smallest plus a little (10 %).
    if (peaks.length > 1 && peaks.at(-1) > peaks[0] * 1.1) {
      status = 'missed';
      parts.push('grows with the file size');
    }
    targets.push({ name: 'peak RSS of every bits client command ≤ 100 MB, `--segments 4` included, flat from the smallest size to the largest', status: any ? status : 'n/a', detail: parts.join(', ') });
  }

  {
    const srv = Object.entries(serveRss).filter(([, v]) => v !== undefined);
    const peak = srv.length ? Math.max(...srv.map(([, v]) => v)) : undefined;
    targets.push({
      name: '`bits serve` peak RSS ≤ 100 MB',
      status: peak === undefined ? 'n/a' : peak <= RSS_LIMIT_KIB ? 'met' : 'missed',
      detail: peak === undefined ? 'not measured' : `${(peak / 1024).toFixed(1)} MiB (${((peak * 1024) / 1e6).toFixed(1)} MB)`,
    });
  }

  {
    // Per GiB moved: the same size on both sides, so the ratio of CPU seconds is the ratio per GiB.
    const parts = [];
    let status = 'met';
    let any = false;
    for (const row of rows.filter((r) => r.tool.startsWith('bits '))) {
      const ref = rows.find((r) => r.scenario === row.scenario && r.size === row.size && r.isRef);
      const a = summarise(row).cpuMedian;
      const b = ref ? summarise(ref).cpuMedian : undefined;
      if (a === undefined || !b) continue;
      any = true;
      const r = a / b;
      if (r > 1.5) status = 'missed';
      parts.push(`${SCENARIO_TITLE[row.scenario]} ${sizeLabel(row.size)}: ${((a * GiB) / row.size).toFixed(2)} s/GiB against ${((b * GiB) / row.size).toFixed(2)} (${r.toFixed(2)}×)`);
    }
    targets.push({ name: 'CPU seconds per GiB ≤ 1.5× the reference tool\'s', status: any ? status : 'n/a', detail: parts.join('; ') || 'not measured' });
  }
  return targets;
}

export function targetsMarkdown(targets) {
  return targets.map((t) => `- **${t.status}** — ${t.name}: ${t.detail}`).join('\n');
}
