/**
 * Minimal RFC 4180 CSV: quoted fields with commas, doubled quotes and newlines; CRLF or LF; optional BOM.
 * Corpus metadata (MELD, emodb-dev transcripts) needs real quoting, so a split(',') is not enough.
 */
import { UserError } from '../util/errors.ts';

/** Parse CSV text into rows of fields, each with the 1-based line it starts on. `where` names the file in errors. */
export function parseCsvRows(text: string, where: string): Array<{ fields: string[]; line: number }> {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const rows: Array<{ fields: string[]; line: number }> = [];
  let row: string[] = [];
  let field = '';
  let line = 1;
  let rowLine = 1;
  let inQuotes = false;
  let quoteLine = 0;
  const n = text.length;
  const endRow = () => {
    row.push(field);
    // Drop blank lines (a lone empty field).
    if (!(row.length === 1 && row[0]!.trim() === '')) rows.push({ fields: row, line: rowLine });
    row = [];
    field = '';
  };
  for (let i = 0; i < n; i++) {
    const ch = text[i]!;
    if (inQuotes) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else inQuotes = false;
      } else {
        if (ch === '\n') line++;
        field += ch;
      }
    } else if (ch === '"' && field.length === 0) {
      inQuotes = true;
      quoteLine = line;
    } else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\r' || ch === '\n') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      endRow();
      line++;
      rowLine = line;
    } else {
      // (A quote inside an unquoted field is kept literally, as most writers mean it.)
      field += ch;
    }
  }
  if (inQuotes) throw new UserError(`unterminated quoted field starting on line ${quoteLine}`, where);
  if (field.length > 0 || row.length > 0) endRow();
  return rows;
}

/** Parse CSV text into rows of fields. */
export function parseCsv(text: string, where: string): string[][] {
  return parseCsvRows(text, where).map((r) => r.fields);
}

export interface CsvTable {
  header: string[];
  /** Each record keyed by header name, plus its 1-based line number in the file (header = line 1). */
  records: Array<{ line: number; values: Record<string, string> }>;
}

/** Parse CSV with a header row into records; rows with the wrong field count are errors naming the line. */
export function parseCsvTable(text: string, where: string): CsvTable {
  const rows = parseCsvRows(text, where);
  if (rows.length === 0) throw new UserError('empty CSV (no header row)', where);
  const header = rows[0]!.fields.map((h) => h.trim());
  const seen = new Set<string>();
  for (const h of header) {
    if (h === '') throw new UserError('CSV header has an empty column name', where);
    if (seen.has(h)) throw new UserError(`CSV header repeats column "${h}"`, where);
    seen.add(h);
  }
  const records: CsvTable['records'] = [];
  for (let r = 1; r < rows.length; r++) {
    const { fields, line } = rows[r]!;
    if (fields.length !== header.length) {
      throw new UserError(`line ${line}: ${fields.length} fields, header has ${header.length}`, where);
    }
    const values: Record<string, string> = {};
    header.forEach((h, k) => (values[h] = fields[k]!));
    records.push({ line, values });
  }
  return { header, records };
}

/** Quote a CSV field when needed. */
export function csvField(v: string | number | undefined | null): string {
  const s = v === undefined || v === null ? '' : String(v);
  return /[",\r\n]/.test(s) || /^\s|\s$/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Serialise rows (first row = header) to CSV text with LF line ends. */
export function toCsv(rows: ReadonlyArray<ReadonlyArray<string | number | undefined | null>>): string {
  return rows.map((r) => r.map(csvField).join(',')).join('\n') + '\n';
}
