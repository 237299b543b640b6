package pixelssql;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.Charset;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.InvalidPathException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.FileTime;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;

/**
 * A folder's entries with the lstat of each, read by a small C library in one call
 * (jvm/src/main/c/folders.c) instead of a JNI call per entry and another per lstat: the walk of
 * 100,000 files takes ~25% less time. The library is inside the jar for the platform it was
 * built on (Linux, the build machine's architecture); anywhere it does not load, {@link
 * #available} is false and the walk reads folders through java.nio as before, with the same
 * results.
 */
public final class NativeFolders {

  private NativeFolders() {}

  /**
   * The session setting that turns the library off ("false"): folders are then read through
   * java.nio (the tests compare the two; a user should not need it).
   */
  static final String CONF = "spark.pixels_sql.listing.native";

  /** Whether the session wants folders read by the library (where it loads). */
  static boolean wanted(org.apache.spark.sql.SparkSession session) {
    return wanted(session.conf().get(CONF, "true"));
  }

  /** Whether a value of {@link #CONF} (a session setting, or a JVM property) wants it. */
  static boolean wanted(String setting) {
    return Boolean.parseBoolean(setting.trim());
  }

  // Linux's errno values (the same on every architecture; the library is built for Linux only).
  private static final int ENOENT = 2;
  private static final int EACCES = 13;
  private static final int EEXIST = 17;
  private static final int ENOTDIR = 20;
  private static final int ELOOP = 40;

  private static final int STAT_BYTES = 4 + 4 + 8 * 7;
  private static final long S_IFMT = 0170000;
  private static final long S_IFREG = 0100000;
  private static final long S_IFDIR = 0040000;
  private static final long S_IFLNK = 0120000;

  private static final boolean LINUX = System.getProperty("os.name", "").equals("Linux");

  /** How the JDK spells paths as bytes (sun.jnu.encoding): names are decoded the same way. */
  private static final Charset PATH_CHARSET = pathCharset();

  /** Why the library is not in use; null when it loaded. */
  private static final String UNAVAILABLE = loadAndSay();

  /** Whether folders can be read here by the library. */
  public static boolean available() {
    return UNAVAILABLE == null;
  }

  /** Why they cannot (null when they can): for logs and tests. */
  public static String unavailableReason() {
    return UNAVAILABLE;
  }

  private static native byte[] read(byte[] folder);

  private static native byte[] stat(byte[] path, boolean follow);

  private static native String describe(int errno);

  /** One entry of a folder: its name and its lstat, or why the lstat failed. */
  static final class Entry {
    final String name;
    final Attributes attributes; // null when the lstat failed
    final IOException error;

    Entry(String name, Attributes attributes, IOException error) {
      this.name = name;
      this.attributes = attributes;
      this.error = error;
    }
  }

  /**
   * The entries of {@code folder} ("." and ".." left out; in path order, a folder's name
   * counting as "name/", for valid UTF-8 names), each with its lstat; an entry deleted
   * between the read and its lstat has a {@link NoSuchFileException}. Throws what {@code
   * Files.newDirectoryStream} would when the folder cannot be read. Null when the folder's
   * path or a name in it is not one a Java string spells back to the same bytes (a name in
   * another encoding than the JDK's): java.nio keeps such names as bytes, so the caller reads
   * that folder through it.
   */
  static List<Entry> list(Path folder) throws IOException {
    byte[] path = bytes(folder);
    if (path == null) {
      return null;
    }
    byte[] answer = read(path);
    ByteBuffer in = ByteBuffer.wrap(answer).order(ByteOrder.nativeOrder());
    int error = in.getInt();
    if (error != 0) {
      if (error == ENOTDIR) {
        throw new NotDirectoryException(folder.toString());
      }
      throw exception(folder, error);
    }
    List<Entry> entries = new ArrayList<>();
    while (in.hasRemaining()) {
      int length = in.getShort() & 0xFFFF;
      int start = in.position();
      String name = name(answer, start, length);
      if (name == null) {
        return null;
      }
      in.position(start + length);
      int statError = in.getInt();
      if (statError != 0) {
        in.position(in.position() + STAT_BYTES - 4);
        entries.add(new Entry(name, null, exception(folder.resolve(name), statError)));
      } else {
        entries.add(new Entry(name, attributes(in), null));
      }
    }
    return entries;
  }

  /**
   * The stat of {@code path} (of a symlink's target with {@code follow}); fails as Files would.
   * Null when the path's text does not spell its bytes (see {@link #list}).
   */
  static Attributes stat(Path path, boolean follow) throws IOException {
    byte[] bytes = bytes(path);
    if (bytes == null) {
      return null;
    }
    ByteBuffer in = ByteBuffer.wrap(stat(bytes, follow)).order(ByteOrder.nativeOrder());
    int error = in.getInt();
    if (error != 0) {
      throw exception(path, error);
    }
    return attributes(in);
  }

  private static Attributes attributes(ByteBuffer in) {
    long mode = in.getInt() & 0xFFFFFFFFL;
    return new Attributes(
        mode, in.getLong(), in.getLong(), in.getLong(), in.getLong(), in.getLong(), in.getLong(),
        in.getLong());
  }

  /** The path's bytes, or null when its text does not spell them (java.nio holds other bytes). */
  private static byte[] bytes(Path path) {
    return spellsItself(path) ? path.toString().getBytes(PATH_CHARSET) : null;
  }

  /**
   * Whether the path's text names the same file: not so for a name in another encoding than
   * the JDK's, which java.nio keeps as bytes and spells with U+FFFD.
   */
  static boolean spellsItself(Path path) {
    try {
      return path.equals(path.getFileSystem().getPath(path.toString()));
    } catch (InvalidPathException e) {
      // A charset that cannot encode U+FFFD (ASCII, in a C/POSIX locale) refuses the text.
      return false;
    }
  }

  /** The name's bytes as a string, or null when that string would not spell the same bytes. */
  private static String name(byte[] bytes, int start, int length) {
    boolean ascii = true;
    for (int i = start; i < start + length; i++) {
      if (bytes[i] < 0) {
        ascii = false;
        break;
      }
    }
    String name = new String(bytes, start, length, PATH_CHARSET);
    if (ascii) {
      return name; // every charset the JDK uses for paths on Linux extends ASCII
    }
    byte[] again = name.getBytes(PATH_CHARSET);
    return Arrays.equals(again, 0, again.length, bytes, start, start + length) ? name : null;
  }

  /** The exception java.nio gives for {@code errno} on {@code path} (its text and its type). */
  private static IOException exception(Path path, int errno) {
    String file = path.toString();
    switch (errno) {
      case EACCES:
        return new AccessDeniedException(file);
      case ENOENT:
        return new NoSuchFileException(file);
      case EEXIST:
        return new FileAlreadyExistsException(file);
      case ELOOP:
        return new FileSystemException(
            file, null, describe(errno) + " or unable to access attributes of symbolic link");
      default:
        return new FileSystemException(file, null, describe(errno));
    }
  }

  /** An lstat's answer, as java.nio's BasicFileAttributes of a Unix file system give it. */
  static final class Attributes implements BasicFileAttributes {
    private final long mode;
    private final long size;
    private final long modifiedSeconds;
    private final long modifiedNanos;
    private final long accessedSeconds;
    private final long accessedNanos;
    private final long device;
    private final long inode;

    Attributes(
        long mode,
        long size,
        long modifiedSeconds,
        long modifiedNanos,
        long accessedSeconds,
        long accessedNanos,
        long device,
        long inode) {
      this.mode = mode;
      this.size = size;
      this.modifiedSeconds = modifiedSeconds;
      this.modifiedNanos = modifiedNanos;
      this.accessedSeconds = accessedSeconds;
      this.accessedNanos = accessedNanos;
      this.device = device;
      this.inode = inode;
    }

    @Override
    public FileTime lastModifiedTime() {
      return time(modifiedSeconds, modifiedNanos);
    }

    @Override
    public FileTime lastAccessTime() {
      return time(accessedSeconds, accessedNanos);
    }

    /**
     * The modification time: the library does not ask for the birth time (the JDK does, with
     * statx), and nothing in the walk reads it.
     */
    @Override
    public FileTime creationTime() {
      return lastModifiedTime();
    }

    @Override
    public boolean isRegularFile() {
      return (mode & S_IFMT) == S_IFREG;
    }

    @Override
    public boolean isDirectory() {
      return (mode & S_IFMT) == S_IFDIR;
    }

    @Override
    public boolean isSymbolicLink() {
      return (mode & S_IFMT) == S_IFLNK;
    }

    @Override
    public boolean isOther() {
      return !isRegularFile() && !isDirectory() && !isSymbolicLink();
    }

    @Override
    public long size() {
      return size;
    }

    @Override
    public Object fileKey() {
      return new Key(device, inode);
    }

    /** As the JDK's Unix attributes build a time: whole seconds, else nanoseconds. */
    private static FileTime time(long seconds, long nanos) {
      if (nanos == 0) {
        return FileTime.from(seconds, TimeUnit.SECONDS);
      }
      try {
        return FileTime.from(
            Math.addExact(nanos, Math.multiplyExact(seconds, 1_000_000_000L)),
            TimeUnit.NANOSECONDS);
      } catch (ArithmeticException e) {
        return FileTime.from(seconds * 1_000_000L + nanos / 1_000, TimeUnit.MICROSECONDS);
      }
    }
  }

  /** Device and inode: which file an entry is, whatever its path. */
  static final class Key {
    private final long device;
    private final long inode;

    Key(long device, long inode) {
      this.device = device;
      this.inode = inode;
    }

    @Override
    public boolean equals(Object other) {
      return other instanceof Key && ((Key) other).device == device && ((Key) other).inode == inode;
    }

    @Override
    public int hashCode() {
      return Long.hashCode(device) * 31 + Long.hashCode(inode);
    }

    @Override
    public String toString() {
      return "(dev=" + Long.toHexString(device) + ",ino=" + inode + ")";
    }
  }

  private static Charset pathCharset() {
    try {
      return Charset.forName(System.getProperty("sun.jnu.encoding", "UTF-8"));
    } catch (RuntimeException e) {
      return Charset.defaultCharset();
    }
  }

  /** {@link #load}, and a line in the log when folders will be read through java.nio. */
  private static String loadAndSay() {
    String reason = load();
    if (reason != null) {
      org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(NativeFolders.class);
      String text = "pixels-sql lists local folders through java.nio (~25% slower walk): {}";
      if (LINUX) {
        log.warn(text, reason);
      } else {
        log.info(text, reason);
      }
    }
    return reason;
  }

  /**
   * Loads the library from the jar (copied to a temporary file first: a library cannot be
   * loaded from inside an archive; the copy is deleted once loaded). Returns why it did not
   * load, or null.
   */
  private static String load() {
    if (!LINUX) {
      return "built for Linux only";
    }
    String resource =
        "/pixelssql/native/linux-"
            + System.getProperty("os.arch", "").toLowerCase(Locale.ROOT)
            + "/libpixelssql.so";
    try (InputStream library = NativeFolders.class.getResourceAsStream(resource)) {
      if (library == null) {
        return "the jar has no " + resource;
      }
      Path copy = Files.createTempFile("pixelssql-", ".so");
      try {
        Files.copy(library, copy, StandardCopyOption.REPLACE_EXISTING);
        System.load(copy.toAbsolutePath().toString());
      } finally {
        Files.deleteIfExists(copy);
      }
      return null;
    } catch (IOException | RuntimeException | UnsatisfiedLinkError e) {
      return "cannot load " + resource + ": " + e;
    }
  }
}
