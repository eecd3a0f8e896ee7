import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Why a request to the daemon failed before it answered.
public struct APIClientError: Error, CustomStringConvertible {
  public let description: String
}

/// A client of the daemon's API over its unix socket (`skvm ctl`, tests).
public struct APIClient: Sendable {
  public let socketPath: String

  public init(socketPath: String) { self.socketPath = socketPath }

  /// One answer: status and body.
  public struct Reply: Sendable {
    public var status: Int
    public var body: [UInt8]
    public var text: String { String(decoding: body, as: UTF8.self) }
  }

  private func connect() async throws(APIClientError) -> NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
  {
    do {
      return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(unixDomainSocketPath: socketPath) { channel in
          channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHTTPClientHandlers()
            return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
              wrappingChannelSynchronously: channel)
          }
        }
    } catch let error as IOError where error.errnoCode == ENOENT || error.errnoCode == ECONNREFUSED {
      throw APIClientError(
        description: "cannot connect to skvmd at \(socketPath): the daemon is not running. Start it with "
          + "'skvmd' (as root: 'systemctl start skvmd'; for your own domains: 'skvmd --session')")
    } catch let error as IOError where error.errnoCode == EACCES || error.errnoCode == EPERM {
      throw APIClientError(
        description: "cannot connect to skvmd at \(socketPath): permission denied (the socket is the daemon "
          + "owner's; use 'sudo', or '-c session' for your own daemon)")
    } catch {
      throw APIClientError(description: "cannot connect to skvmd at \(socketPath): \(error)")
    }
  }

  private func head(_ method: HTTPMethod, _ target: String, bodyCount: Int, contentType: String) -> HTTPRequestHead {
    var headers = HTTPHeaders()
    headers.add(name: "Host", value: "localhost")
    headers.add(name: "Content-Type", value: contentType)
    headers.add(name: "Content-Length", value: String(bodyCount))
    headers.add(name: "Connection", value: "close")
    return HTTPRequestHead(version: .http1_1, method: method, uri: target, headers: headers)
  }

  /// Sends one request and reads the whole answer.
  public func request(
    _ method: HTTPMethod, _ target: String, body: [UInt8] = [], contentType: String = "application/json"
  ) async throws(APIClientError) -> Reply {
    let channel = try await connect()
    do {
      return try await channel.executeThenClose { inbound, outbound in
        try await outbound.write(.head(head(method, target, bodyCount: body.count, contentType: contentType)))
        if !body.isEmpty { try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
        try await outbound.write(.end(nil))
        var reply = Reply(status: 0, body: [])
        for try await part in inbound {
          switch part {
          case .head(let responseHead): reply.status = Int(responseHead.status.code)
          case .body(let buffer): reply.body += buffer.readableBytesView
          case .end: return reply
          }
        }
        throw APIClientError(description: "skvmd closed the connection before it answered")
      }
    } catch let error as APIClientError {
      throw error
    } catch {
      throw APIClientError(description: "the request to skvmd failed: \(error)")
    }
  }

  /// Sends a GET and hands each line of the (streamed) answer to `line` until it returns false
  /// or the daemon ends the stream.
  public func stream(_ target: String, line: @Sendable ([UInt8]) -> Bool) async throws(APIClientError) {
    let channel = try await connect()
    do {
      try await channel.executeThenClose { inbound, outbound in
        try await outbound.write(.head(head(.GET, target, bodyCount: 0, contentType: "application/json")))
        try await outbound.write(.end(nil))
        var pending: [UInt8] = []
        for try await part in inbound {
          guard case .body(let buffer) = part else {
            if case .end = part { return }
            continue
          }
          pending += buffer.readableBytesView
          while let newline = pending.firstIndex(of: 0x0A) {
            let text = Array(pending[..<newline])
            pending.removeSubrange(...newline)
            if !line(text) { return }
          }
        }
      }
    } catch let error as APIClientError {
      throw error
    } catch {
      throw APIClientError(description: "the event stream from skvmd failed: \(error)")
    }
  }
}
