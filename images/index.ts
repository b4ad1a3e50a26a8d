/**
 * The image layer's public API (see docs/ARCHITECTURE.md, "Image layer").
 */
export * from './registry';
export { schema, type MessageDef, type FieldDef } from './schema';
export { decodeMessage, encodeMessage, UNKNOWN_FIELDS, type Msg } from './wire';
export type { ImageEntry, Extra, IpcMsgItem } from './entry';
export { MAX_ENTRY_SIZE } from './entry';
export { decodeImage, encodeImage, encodeHeader, EntryEncoder, type DecodedImage } from './framing';
export { ImageReader, ImageWriter, readImageFile, writeImageFile } from './io';
export { imageToCrit, imageFromCrit, messageToCrit, messageFromCrit } from './critjson';
export { pyDumps, parseJson } from './pyjson';
export { Pagemap, PageReader, FilePageSource, type PageSource, type PageRun, type PageLocation, PAGE_SIZE, PE_PARENT, PE_LAZY, PE_PRESENT } from './pagemap';
export { EncodeError } from './wire';
