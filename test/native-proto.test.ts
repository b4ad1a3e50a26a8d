/**
 * The C helper encodes and decodes helper.proto by hand with field numbers from native/src/fields.h; this test
 * makes sure the two can never drift: every field and enum value of the .proto has its #define with the same
 * number, and every #define names something in the .proto.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import { HELPER_PROTO } from '../native/helper';

const FIELDS_H = path.resolve(__dirname, '..', '..', 'native', 'src', 'fields.h');

function protoNumbers(): Map<string, number> {
  const root = new protobuf.Root().loadSync(HELPER_PROTO, { keepCase: true });
  const out = new Map<string, number>();
  const walk = (ns: protobuf.NamespaceBase): void => {
    for (const obj of ns.nestedArray) {
      if (obj instanceof protobuf.Type) {
        for (const f of obj.fieldsArray) out.set(`F_${obj.name}_${f.name}`, f.id);
        walk(obj);
      } else if (obj instanceof protobuf.Enum) {
        for (const [k, v] of Object.entries(obj.values)) out.set(`E_${obj.name}_${k}`, v);
      } else if (obj instanceof protobuf.Namespace) {
        walk(obj);
      }
    }
  };
  walk(root);
  return out;
}

function headerNumbers(): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of fs.readFileSync(FIELDS_H, 'utf8').matchAll(/^#define\s+([FE]_\w+)\s+(\d+)\s*$/gm))
    out.set(m[1], Number(m[2]));
  return out;
}

describe('helper.proto and native/src/fields.h', () => {
  const p = protoNumbers();
  const h = headerNumbers();

  test('the .proto has fields and the header has defines', () => {
    expect(p.size).toBeGreaterThan(100);
    expect(h.size).toBeGreaterThan(100);
  });

  test('every .proto field and enum value has a #define with the same number', () => {
    const wrong = [...p].filter(([k, v]) => h.get(k) !== v).map(([k, v]) => `${k}: proto ${v}, header ${h.get(k)}`);
    expect(wrong).toEqual([]);
  });

  test('every #define names a .proto field or enum value', () => {
    expect([...h.keys()].filter((k) => !p.has(k))).toEqual([]);
  });
});
