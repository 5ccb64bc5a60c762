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

/** Each target: met / missed / n/a with the numbers that decided it. */
export function evaluateTargets(rows, startup, sizes) {
  const targets = [];
  const byTool = (scenario, tool, size) => rows.find((r) => r.scenario === scenario && r.tool === tool && r.size === size);

  const throughput = (name, scenario, bitsTool, factor) => {
    const parts = [];
    let status = 'met';
    for (const size of sizes) {
      const row = byTool(scenario, bitsTool, size);
      if (!row) {
        status = status === 'missed' ? 'missed' : 'n/a';
        parts.push(`${sizeLabel(size)}: not measured`);
        continue;
      }
      const s = summarise(row);
      const ref = refOf(rows, row);
      if (!s.ok) {
        status = 'missed';
        parts.push(`${sizeLabel(size)}: bits ${row.verified === false ? 'produced a wrong file' : 'failed'}`);
        continue;
      }
      if (!ref) {
        status = status === 'missed' ? 'missed' : 'n/a';
        parts.push(`${sizeLabel(size)}: no reference`);
        continue;
      }
      const r = ratioToRef(rows, row);
      if (r === undefined) {
        status = status === 'missed' ? 'missed' : 'n/a';
        parts.push(`${sizeLabel(size)}: reference failed`);
        continue;
      }
      if (r < factor) status = 'missed';
      parts.push(`${sizeLabel(size)}: ${r.toFixed(2)}×`);
    }
    targets.push({ name, status, detail: parts.join(', ') });
  };

  throughput('upload throughput ≥ 0.9× curl PUT to nginx', 'upload', 'bits upload', 0.9);
  throughput('single-stream download ≥ 1.0× curl', 'download', 'bits download', 1.0);
  throughput('`--segments 4` ≥ 1.0× aria2c -x4', 'segments', 'bits download --segments 4', 1.0);

  {
    const parts = [];
    let status = 'met';
    let any = false;
    for (const size of sizes) {
      const bitsRows = rows.filter((r) => r.size === size && r.tool.startsWith('bits '));
      const rss = bitsRows.map((r) => summarise(r).peakRssKiB).filter((v) => v !== undefined);
      if (rss.length === 0) {
        parts.push(`${sizeLabel(size)}: not measured`);
        continue;
      }
      any = true;
      const peak = Math.max(...rss);
      if (peak > RSS_LIMIT_KIB) status = 'missed';
      parts.push(`${sizeLabel(size)}: ${(peak / 1024).toFixed(1)} MiB (${((peak * 1024) / 1e6).toFixed(1)} MB)`);
    }
    targets.push({ name: 'peak RSS of every bits client command ≤ 100 MB at every size (flat as the file grows)', status: any ? status : 'n/a', detail: parts.join(', ') });
  }

  {
    const bits = startup.find((s) => !s.isRef);
    const ref = startup.find((s) => s.isRef);
    if (bits && ref && bits.ms.length && ref.ms.length) {
      const r = stats(bits.ms).median / stats(ref.ms).median;
      targets.push({ name: '`bits --version` ≤ 2× `node -e 0`', status: r <= 2 ? 'met' : 'missed', detail: `${r.toFixed(2)}×` });
    } else targets.push({ name: '`bits --version` ≤ 2× `node -e 0`', status: 'n/a', detail: 'not measured' });
  }
  return targets;
}

export function targetsMarkdown(targets) {
  return targets.map((t) => `- **${t.status}** — ${t.name}: ${t.detail}`).join('\n');
}
