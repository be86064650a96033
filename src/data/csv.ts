/**
 * CSV through csv-parse and csv-stringify (RFC 4180: quoted fields with commas, doubled quotes and newlines;
 * CRLF or LF; optional BOM). Corpus metadata (MELD, emodb-dev transcripts) needs real quoting.
 */
import { CsvError, parse } from 'csv-parse/sync';
import { stringify } from 'csv-stringify/sync';
import { UserError } from '../util/errors.ts';

/** Parse CSV text into rows of fields, each with the 1-based line it starts on; blank lines are dropped. */
function parseCsvRows(text: string, where: string): Array<{ fields: string[]; line: number }> {
  let parsed: Array<{ record: string[]; info: { lines: number } }>;
  try {
    // relax_quotes keeps a quote inside an unquoted field literally, as most writers mean it
    parsed = parse(text, { bom: true, info: true, relax_column_count: true, relax_quotes: true }) as unknown as typeof parsed;
  } catch (err) {
    if (err instanceof CsvError && err.code === 'CSV_QUOTE_NOT_CLOSED') throw new UserError(`unterminated quoted field (${err.message})`, where);
    if (err instanceof CsvError) throw new UserError(err.message, where);
    throw err;
  }
  return parsed
    .filter(({ record }) => !(record.length === 1 && record[0]!.trim() === ''))
    .map(({ record, info }) => ({
      fields: record,
      // info.lines is the line the record ends on; quoted fields may span lines
      line: info.lines - record.reduce((n, f) => n + (f.match(/\n/g)?.length ?? 0), 0),
    }));
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

/** The first field of each row of CSV text (e.g. the file column of a results file). */
export function firstColumn(text: string, where: string): string[] {
  return parseCsvRows(text, where).map((r) => r.fields[0]!);
}

/**
 * Serialise rows (first row = header) to CSV text with LF line ends; a field with a quote, comma, line break
 * or edge whitespace is quoted (so the parser reads back exactly what was written).
 */
export function toCsv(rows: ReadonlyArray<ReadonlyArray<string | number | undefined | null>>): string {
  return stringify(rows as unknown[][], { record_delimiter: 'unix', quoted_match: /\r|^\s|\s$/ });
}
