/**
 * What a terminal shows after a byte stream: enough of a VT100 for progress
 * bars (CR, LF, cursor up/down/column, erase in line/display; colours and
 * modes are dropped). Tests read the screen, not the escape sequences, so a
 * bar that is drawn and then overwritten does not count as shown.
 */
export function screenOf(output: string, columns = 100): string[] {
  const lines: string[][] = [[]];
  let row = 0;
  let col = 0;
  const line = () => (lines[row] ??= []);
  for (let i = 0; i < output.length; i++) {
    const ch = output[i]!;
    if (ch === '\u001b') {
      const m = /^\u001b\[([0-9;?]*)([ -/]*)([@-~])/.exec(output.slice(i, i + 32));
      if (!m) continue;
      i += m[0].length - 1;
      const n = m[1] === '' || m[1]!.startsWith('?') ? 1 : Number(m[1]!.split(';')[0]) || 1;
      switch (m[3]) {
        case 'A':
          row = Math.max(0, row - n);
          break;
        case 'B':
          row += n;
          break;
        case 'G':
          col = n - 1;
          break;
        case 'K': {
          const l = line();
          if (m[1] === '2') l.length = 0;
          else if (m[1] === '1') l.fill(' ', 0, col);
          else l.length = Math.min(l.length, col);
          break;
        }
        case 'J':
          if (m[1] === '2') lines.length = 0;
          else lines.length = row + 1;
          break;
        default:
          break; // colours, modes
      }
      continue;
    }
    if (ch === '\r') col = 0;
    else if (ch === '\n') row++;
    else if (ch >= ' ' || ch === '\t') {
      if (col >= columns) continue; // no wrap (the bars turn autowrap off)
      const l = line();
      while (l.length < col) l.push(' ');
      l[col++] = ch;
    }
  }
  const out: string[] = [];
  for (let r = 0; r < Math.max(lines.length, row + 1); r++) out.push((lines[r] ?? []).join('').trimEnd());
  return out;
}
