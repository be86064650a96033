import { describe, expect, it } from 'vitest';
import { UserError } from '../util/errors.ts';
import { firstColumn, parseCsvTable, toCsv } from './csv.ts';

describe('CSV (csv-parse / csv-stringify)', () => {
  it('reads back exactly what it writes: quotes, commas, line breaks, CR, edge spaces, numbers', () => {
    const rows = [
      ['path', 'transcript', 'n'],
      ['a "b".wav', 'Hello, you', '1.5'],
      ['c\nd.wav', ' padded ', ''],
      ['e\rf.wav', 'x', '-2'],
    ];
    const t = parseCsvTable(toCsv(rows), 'm.csv');
    expect(t.header).toEqual(rows[0]);
    expect(t.records.map((r) => Object.values(r.values))).toEqual(rows.slice(1));
    expect(firstColumn(toCsv(rows), 'm.csv')).toEqual(rows.map((r) => r[0]));
  });

  it('numbers each record by the line it starts on; BOM, CRLF and blank lines are fine', () => {
    const t = parseCsvTable('\ufeffa,b\r\n1,"two\nlines"\r\n\r\n3,4\r\n', 'm.csv');
    expect(t.records.map((r) => [r.line, r.values.b])).toEqual([
      [2, 'two\nlines'],
      [5, '4'],
    ]);
  });

  it('bad CSV is a one-line UserError naming the problem', () => {
    const err = (text: string) => {
      try {
        parseCsvTable(text, 'm.csv');
      } catch (e) {
        expect(e).toBeInstanceOf(UserError);
        return (e as Error).message;
      }
      throw new Error('no error');
    };
    expect(err('a,b\n"x,1\n')).toMatch(/unterminated quoted field/);
    expect(err('a,b\n1\n')).toMatch(/line 2: 1 fields, header has 2/);
    expect(err('a,a\n')).toMatch(/repeats column "a"/);
    expect(err('\n\n')).toMatch(/empty CSV/);
    expect(err('a,b\n"x,1\n2,3\n').split('\n')).toHaveLength(1);
  });
});
