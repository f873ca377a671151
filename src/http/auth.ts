import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { HttpError, HttpErrorCodes } from './errors.js'

const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest()
}

/**
 * An `onRequest` hook requiring `Authorization: Bearer <token>`, or undefined when no token is
 * configured (the route is open). Runs before the body is read, so refused requests cost nothing.
 * Both sides are hashed first: `timingSafeEqual` needs equal lengths, and comparing digests
 * leaks neither the token's content nor its length.
 */
export function bearerGuard(token: string | undefined, realm: string): ((request: FastifyRequest, reply: FastifyReply) => Promise<void>) | undefined {
  if (token === undefined) return undefined
  const expected = digest(token)
  const challenge = `Bearer realm="${realm}"`
  return async function requireBearer(request) {
    const header = request.headers.authorization
    if (header === undefined) {
      throw new HttpError(401, HttpErrorCodes.UNAUTHORIZED, 'a bearer token is required', { headers: { 'www-authenticate': challenge } })
    }
    const m = BEARER.exec(header)
    if (m === null || !timingSafeEqual(digest(m[1] as string), expected)) {
      throw new HttpError(401, HttpErrorCodes.UNAUTHORIZED, 'the bearer token is not valid', {
        headers: { 'www-authenticate': `${challenge}, error="invalid_token"` },
      })
    }
  }
}
