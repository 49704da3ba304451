// asl-validator ships no type declarations; this is the slice the tests use.
declare module 'asl-validator' {
  interface ValidationResult {
    isValid: boolean;
    errors: unknown[];
    errorsText: (separator?: string) => string;
  }
  function validator(definition: unknown, options?: { checkPaths?: boolean; checkArn?: boolean }): ValidationResult;
  export default validator;
}
