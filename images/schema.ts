/**
 * The message schemas of CRIU images, read from images/proto/*.proto at first use.
 *
 * protobufjs only parses the text; the wire codec (wire.ts) is godwit's own, because images must
 * re-encode byte for byte (field order, presence, unknown fields) and 64-bit values must stay bigint.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';

export type ScalarType =
  | 'double' | 'float' | 'int32' | 'int64' | 'uint32' | 'uint64' | 'sint32' | 'sint64'
  | 'fixed32' | 'fixed64' | 'sfixed32' | 'sfixed64' | 'bool' | 'string' | 'bytes';

/** CRIU's (criu).* field options, used by the crit-style JSON form. */
export interface CriuOpts {
  hex?: boolean;
  ipadd?: boolean;
  flags?: string;
  dev?: boolean;
  odev?: boolean;
  dict?: string;
  conv?: string;
}

export interface EnumDef {
  name: string;
  byName: Map<string, number>;
  byNumber: Map<number, string>;
}

export interface FieldDef {
  name: string;
  id: number;
  /** 'message' and 'enum' refer to `message` / `enumDef`; anything else is a scalar. */
  kind: ScalarType | 'message' | 'enum';
  repeated: boolean;
  required: boolean;
  packed: boolean;
  opts: CriuOpts;
  message?: MessageDef;
  enumDef?: EnumDef;
}

export interface MessageDef {
  name: string;
  /** Sorted by field number: the order protobuf-c (and so CRIU) writes them. */
  fields: FieldDef[];
  byId: Map<number, FieldDef>;
  byName: Map<string, FieldDef>;
}

const SCALARS = new Set<string>([
  'double', 'float', 'int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64',
  'fixed32', 'fixed64', 'sfixed32', 'sfixed64', 'bool', 'string', 'bytes',
]);

/** Where the .proto files are: images/proto beside the sources (dist/images/.. -> ../../images/proto). */
export function protoDir(): string {
  const candidates = [
    path.resolve(__dirname, 'proto'),
    path.resolve(__dirname, '..', '..', 'images', 'proto'),
  ];
  for (const dir of candidates) if (fs.existsSync(path.join(dir, 'core.proto'))) return dir;
  throw new Error(`CRIU image schemas not found (looked in ${candidates.join(', ')})`);
}

export class Schema {
  readonly messages = new Map<string, MessageDef>();
  readonly enums = new Map<string, EnumDef>();

  message(name: string): MessageDef {
    const m = this.messages.get(name);
    if (!m) throw new Error(`no message type '${name}' in the image schemas`);
    return m;
  }
}

function criuOpts(options: Record<string, unknown> | undefined): CriuOpts {
  const o: CriuOpts = {};
  if (!options) return o;
  for (const [k, v] of Object.entries(options)) {
    const m = /^\(criu\)\.(\w+)$/.exec(k);
    if (!m) continue;
    (o as Record<string, unknown>)[m[1]] = v;
  }
  return o;
}

/** Parse every .proto file in `dir` into one flat namespace (CRIU's schemas have no packages). */
export function loadSchema(dir: string = protoDir()): Schema {
  const schema = new Schema();
  const pending: Array<{ def: MessageDef; type: protobuf.Type }> = [];
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.proto')).sort();
  const collect = (ns: protobuf.NamespaceBase, prefix: string): void => {
    for (const obj of ns.nestedArray) {
      if (obj instanceof protobuf.Type) {
        const def: MessageDef = { name: obj.name, fields: [], byId: new Map(), byName: new Map() };
        schema.messages.set(prefix + obj.name, def);
        pending.push({ def, type: obj });
        collect(obj, prefix + obj.name + '.');
      } else if (obj instanceof protobuf.Enum) {
        const e: EnumDef = { name: obj.name, byName: new Map(), byNumber: new Map() };
        for (const [n, v] of Object.entries(obj.values)) {
          e.byName.set(n, v);
          if (!e.byNumber.has(v)) e.byNumber.set(v, n);
        }
        schema.enums.set(prefix + obj.name, e);
      } else if (obj instanceof protobuf.Namespace) {
        collect(obj, prefix + obj.name + '.');
      }
    }
  };
  for (const f of files) {
    const parsed = protobuf.parse(fs.readFileSync(path.join(dir, f), 'utf8'), { keepCase: true });
    collect(parsed.root, '');
  }
  for (const { def, type } of pending) {
    const scope = type.fullName.replace(/^\./, '').split('.');
    for (const field of type.fieldsArray) {
      if (field.extend) continue;
      const rule = (field as unknown as { rule?: string }).rule;
      const fd: FieldDef = {
        name: field.name,
        id: field.id,
        kind: 'message',
        repeated: rule === 'repeated',
        required: rule === 'required',
        packed: field.options?.packed === true,
        opts: criuOpts(field.options),
      };
      if (SCALARS.has(field.type)) {
        fd.kind = field.type as ScalarType;
      } else {
        // Resolve the way protoc does: innermost enclosing scope first.
        let found = false;
        for (let i = scope.length; i >= 0 && !found; i--) {
          const name = [...scope.slice(0, i), field.type].join('.');
          const m = schema.messages.get(name);
          const e = schema.enums.get(name);
          if (m) { fd.kind = 'message'; fd.message = m; found = true; }
          else if (e) { fd.kind = 'enum'; fd.enumDef = e; found = true; }
        }
        if (!found) throw new Error(`${type.name}.${field.name}: unknown type '${field.type}'`);
      }
      def.fields.push(fd);
    }
    def.fields.sort((a, b) => a.id - b.id);
    for (const fd of def.fields) {
      def.byId.set(fd.id, fd);
      def.byName.set(fd.name, fd);
    }
  }
  return schema;
}

let cached: Schema | undefined;

/** The schema of all CRIU image messages (loaded once). */
export function schema(): Schema {
  if (!cached) cached = loadSchema();
  return cached;
}
