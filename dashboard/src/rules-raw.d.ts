// Vite's `?raw` imports: the file's text as a string, bundled at build time (rules-editor.ts takes the rule
// API's declarations this way).
declare module '*?raw' {
  const text: string;
  export default text;
}
