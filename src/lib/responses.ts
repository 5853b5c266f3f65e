import { errorSchema } from "./schemas.ts";

/** OpenAPI response entries, so each route lists every status it can answer with. */
export const jsonContent = <T>(schema: T, description: string) => ({
  content: { "application/json": { schema } },
  description,
});

export const errorResponse = (description: string) => jsonContent(errorSchema, description);

export const jsonBody = <T>(schema: T) => ({
  content: { "application/json": { schema } },
  required: true,
});

/** A JSON body that may be left out entirely (validated when sent). */
export const optionalJsonBody = <T>(schema: T) => ({
  content: { "application/json": { schema } },
  required: false,
});

export const protectedResponses = {
  401: errorResponse("Missing, malformed or expired token (UNAUTHORIZED)"),
};

export const validationResponses = {
  400: errorResponse("BAD_JSON or VALIDATION_FAILED, with details"),
};
